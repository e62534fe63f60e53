"""Report files in and out: rows as the report's DataFrame, gradients.csv read back, CSV text, atomic writes,
and the report directories that merge and drift take as input.

CSV text cells that a spreadsheet would run as a formula are neutralized by ``csv_text`` and restored exactly
by ``read_rows``. Every file is replaced atomically (``write_atomically``).
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .rows import COLUMNS, NUMERIC, ROW_KEY

# A spreadsheet runs a cell starting with one of these as a formula; "'" is
# prefixed too so that read_rows can strip exactly one "'" from every such cell.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "'")


class ReportError(Exception):
    """An input that is not a readable report directory (merge, drift)."""


@dataclass
class Written:
    text: str
    warnings: list = field(default_factory=list)
    path: Path | None = None  # the directory actually written (``out_dir/partial`` when diverted)


def report_dirs(inputs) -> list[Path]:
    """The inputs as paths, each a directory holding gradients.csv; else ReportError naming every bad one."""
    inputs = [Path(d) for d in inputs]
    bad = [f"{d} (no such directory)" if not d.is_dir() else f"{d} (no gradients.csv)"
           for d in inputs if not (d / "gradients.csv").is_file()]
    if bad:
        raise ReportError("not a report directory: " + ", ".join(bad))
    return inputs


def directories_command(argv, prog: str, description: str, action, inputs_help: str, out_help: str) -> int:
    """``PROG DIR... --out DIR``: run ``action(inputs, out)``, print what it wrote and its warnings;
    a ReportError is one line on stderr and exit status 2."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("inputs", nargs="+", type=Path, help=inputs_help)
    parser.add_argument("--out", required=True, type=Path, help=out_help)
    args = parser.parse_args(argv)
    try:
        written = action(args.inputs, args.out)
    except ReportError as e:
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return 2
    print(written.text)
    for message in written.warnings:
        print(f"WARNING: {message}", file=sys.stderr)
    return 0


def _catalogue_families(layers) -> dict:
    """Layer -> its family in the current catalogue ("other" for a layer it does not know)."""
    # Imported here, not at the top: only rows from before the family column need it; a report of
    # current rows shows the families they recorded and never reads the catalogue.
    from gradparity.reference import LAYERS

    return {layer: LAYERS[layer].family if layer in LAYERS else "other" for layer in layers}


def frame(rows) -> pd.DataFrame:
    """Rows as a DataFrame with the report's columns, each ROW_KEY once (the last wins), sorted.

    Rows from reports older than ``reference``/``kind``/``name`` are upgraded:
    reference "oracle"; tensor "out" becomes kind "out", name "y"; any other
    tensor a gradient of that name. Rows older than ``family`` (or with it
    empty) get their layer's family in the current catalogue, "other" for a
    layer it does not know.
    """
    df = rows.copy() if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    if "tensor" in df.columns and "kind" not in df.columns:
        tensor = df["tensor"].astype(str)
        df["kind"] = np.where(tensor == "out", "out", "grad")
        df["name"] = np.where(tensor == "out", "y", tensor)
    if "reference" not in df.columns:
        df["reference"] = "oracle"
    df = df.reindex(columns=COLUMNS)
    df["reference"] = df["reference"].fillna("oracle")
    for col in NUMERIC:
        df[col] = pd.to_numeric(df[col], errors="coerce")
    for col in set(COLUMNS) - set(NUMERIC):
        df[col] = df[col].astype("string").fillna("").astype(str)
    unnamed = df["family"] == ""
    if unnamed.any():
        layers = df.loc[unnamed, "layer"]
        df.loc[unnamed, "family"] = layers.map(_catalogue_families(set(layers)))
    return df.drop_duplicates(ROW_KEY, keep="last").sort_values(ROW_KEY, kind="stable").reset_index(drop=True)


def read_rows(directory: Path) -> pd.DataFrame:
    """gradients.csv as written, the formula prefix undone: every text cell
    starting with "'" loses exactly that character (write_report added it)."""
    df = pd.read_csv(Path(directory) / "gradients.csv", dtype=str, keep_default_na=False)
    for col in df.columns:
        if col in NUMERIC:
            df[col] = pd.to_numeric(df[col], errors="coerce")
        else:
            df[col] = df[col].map(lambda v: v[1:] if v.startswith("'") else v)
    return df


def _neutralized(df: pd.DataFrame) -> pd.DataFrame:
    """Text cells a spreadsheet would run as a formula, prefixed with "'"; numbers untouched."""
    out = df.copy()
    for col in out.columns:
        if not pd.api.types.is_numeric_dtype(out[col]):
            out[col] = out[col].map(lambda v: f"'{v}" if isinstance(v, str) and v.startswith(FORMULA_START) else v)
    return out


def csv_text(df: pd.DataFrame) -> str:
    """``df`` as CSV text, formula cells neutralized."""
    # CRLF line ends (RFC 4180) because the csv module quotes a cell holding a
    # line-end character only if it is in the terminator: with "\n", a bare "\r"
    # in a detail would go out unquoted and split the row when read back.
    return _neutralized(df).to_csv(index=False, lineterminator="\r\n")


def write_atomically(path: Path, text: str | bytes) -> None:
    """Write a temporary file beside ``path``, then rename it over ``path``: a
    reader, or a crash, sees the old file or the new one, never half of one."""
    # Not tempfile.mkstemp: its files are private (0600), and the report should get
    # the same permissions as any file the user writes.
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        if isinstance(text, bytes):
            with open(tmp, "xb") as f:
                f.write(text)
        else:
            with open(tmp, "x", encoding="utf-8", newline="") as f:
                f.write(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
