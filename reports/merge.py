"""Merge results from several runs or shards into one report.

    python -m gradparity.reports DIR [DIR ...] --out DIR

Each input DIR is a report directory (gradients.csv, and meta.json with the
notes its run recorded). Rows are concatenated, each ROW_KEY kept once (the
last input wins); notes are combined the same way (conventions by layer x
framework, divergences by key), so the merged report shows the reasons its
inputs recorded, not the current code's. The merge is partial if any input
was. ``--out`` may be one of the inputs: everything is read before writing.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from .files import ReportError, Written, directories_command, frame, read_rows, report_dirs
from .render import write_report


def _meta(directory: Path) -> dict | None:
    path = directory / "meta.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise ReportError(f"{path}: not valid JSON ({e})") from None


def merge(inputs: list[Path], out: Path) -> Written:
    """One report in ``out`` from the report directories ``inputs`` (see the module docstring)."""
    inputs = report_dirs(inputs)
    frames, conventions, divergences, partial, missing, warnings = [], {}, {}, [], [], []
    recorded = {}  # the precision bound and the training tables: the last input that recorded them
    special = {}
    for d in inputs:
        frames.append(frame(read_rows(d)))  # one input at a time: old and new schemas upgrade separately
        meta = _meta(d)
        if meta is None:
            warnings.append(f"{d} has no meta.json: the conventions and divergence reasons of its run are unknown")
            continue
        notes, run = meta.get("notes") or {}, meta.get("run") or {}
        conventions.update({(c["layer"], c["framework"]): c for c in notes.get("conventions", [])})
        divergences.update({v["key"]: v for v in notes.get("divergences", [])})
        recorded.update({k: notes[k] for k in ("precision", "training") if notes.get(k)})
        special.update(notes.get("special") or {})  # shards run different layers: every one's declaration
        if run.get("partial"):
            partial.append(f"{d} ({run.get('why') or 'partial'})")
            missing.extend(run.get("missing", []))
    run = {"partial": bool(partial), "missing": missing,
           "why": "merged from partial input(s): " + "; ".join(partial) if partial else ""}
    written = write_report(pd.concat(frames, ignore_index=True), out,
                           notes={"conventions": list(conventions.values()), "divergences": list(divergences.values()),
                                  **recorded, **({"special": special} if special else {})},
                           run=run)
    written.warnings[:0] = warnings
    return written


def main(argv=None, prog: str = "python -m gradparity.reports") -> int:
    return directories_command(argv, prog, __doc__.splitlines()[0], merge, "report directories to merge",
                               "directory for the merged report")

