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
    """What ``write_report`` wrote: a one-line account, warnings, the directory (``out_dir/partial``
    for a partial report), and the summary and rows it wrote (for a terminal summary)."""

    text: str
    warnings: list = field(default_factory=list)
    path: Path | None = None
    summary: pd.DataFrame | None = None
    frame: pd.DataFrame | None = None


def report_dirs(inputs) -> list[Path]:
    """The inputs as paths, each a directory holding gradients.csv; else ReportError naming every bad one."""
    inputs = [Path(d) for d in inputs]
    def why(d: Path) -> str:
        if not d.is_dir():
            return f"{d} (no such directory)"
        if (d / "partial" / "gradients.csv").is_file():
            return f"{d} (no gradients.csv; its partial report is in {d / 'partial'})"
        return f"{d} (no gradients.csv)"

    bad = [why(d) for d in inputs if not (d / "gradients.csv").is_file()]
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
    df.loc[df["mode"] == "", "mode"] = "eager"  # rows from before execution modes ran eagerly
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


# ---- the files a report directory holds that gradparity wrote

MANIFEST = ".gradparity-files"  # in a report directory: every file its report consists of, one path a line
# What a report directory written before the manifest existed holds of gradparity's.
_LEGACY = ("gradients.csv", "summary.csv", "meta.json", "report.html", "plots/errors.png", "plots/gradient_flow.png")


def owned(directory: Path) -> set[str]:
    """The files (relative paths) of the report in ``directory``: its manifest, or the fixed
    names of a report from before manifests. Anything else there is somebody else's."""
    manifest = Path(directory) / MANIFEST
    if manifest.is_file():
        return {line for line in manifest.read_text(encoding="utf-8").splitlines() if line}
    return {name for name in _LEGACY if (Path(directory) / name).is_file()}


def publish(directory: Path, contents: dict, *, moves: dict | None = None, copies: dict | None = None) -> None:
    """Make ``directory`` hold exactly this report among the files gradparity owns there:
    ``contents`` ({relative path: text or bytes}) written atomically, ``moves`` and
    ``copies`` ({relative path: source file}) brought in, then every file of the
    previous report that this one does not have removed, and the manifest written.
    A file gradparity did not write is never touched. gradients.csv, whose presence
    means "a report is here", is written last."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    before = owned(directory)
    moves, copies = moves or {}, copies or {}
    for rel, source in moves.items():
        (directory / rel).parent.mkdir(parents=True, exist_ok=True)
        os.replace(source, directory / rel)
    for rel, source in copies.items():
        (directory / rel).parent.mkdir(parents=True, exist_ok=True)
        write_atomically(directory / rel, Path(source).read_bytes())
    for rel in sorted(contents, key=lambda r: r == "gradients.csv"):
        (directory / rel).parent.mkdir(parents=True, exist_ok=True)
        write_atomically(directory / rel, contents[rel])
    now = set(contents) | set(moves) | set(copies)
    for rel in before - now:
        (directory / rel).unlink(missing_ok=True)
    write_atomically(directory / MANIFEST, "".join(f"{rel}\n" for rel in sorted(now)))
    _prune(directory, before - now)


def retire(directory: Path) -> None:
    """Remove the report in ``directory`` (its own files only), and the directory if nothing else is left."""
    directory = Path(directory)
    if not directory.is_dir():
        return
    gone = owned(directory)
    for rel in gone:
        (directory / rel).unlink(missing_ok=True)
    (directory / MANIFEST).unlink(missing_ok=True)
    _prune(directory, gone)
    try:
        directory.rmdir()
    except OSError:
        pass  # somebody else's files are there


def _prune(directory: Path, removed) -> None:
    """Remove the subdirectories the removed files were in, where they are now empty."""
    for parent in sorted({(directory / rel).parent for rel in removed}, key=lambda p: -len(p.parts)):
        if parent != directory:
            try:
                parent.rmdir()
            except OSError:
                pass
