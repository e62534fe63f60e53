"""Merge results from several runs or shards into one report, or recover a run that never wrote its own.

    gradparity merge DIR [DIR ...] --out DIR
    gradparity merge DIR --recover

Each input DIR is a report directory (gradients.csv, and meta.json with the
notes its run recorded). Rows are concatenated, each ROW_KEY kept once (the
last input wins); notes are combined the same way (conventions by layer x
framework, divergences by key, each group's census), so the merged report shows
the reasons its inputs recorded, not the current code's. Every input's saved
cases are copied into the merged report's cases/, and the replay commands name
them there. The merge is partial if any input was. ``--out`` may be one of the
inputs: everything is read before writing.

``--recover``: a run whose main process was killed (not merely interrupted)
leaves its rows in DIR/.runs/; this writes them as a partial report in
DIR/partial (the next run's start says when there are such rows).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
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


def _replays_in(df: pd.DataFrame, out: Path, cases: dict) -> pd.DataFrame:
    """The replay commands naming the merged report's copies of the cases."""
    def moved(command: str) -> str:
        return re.sub(r"(gradparity replay )(\S+\.npz)",
                      lambda m: m.group(1) + (str(out / "cases" / Path(m.group(2)).name)
                                              if Path(m.group(2)).name in cases else m.group(2)), command)

    return df.assign(reproduce=df["reproduce"].map(moved))


def merge(inputs: list[Path], out: Path) -> Written:
    """One report in ``out`` from the report directories ``inputs`` (see the module docstring)."""
    inputs = report_dirs(inputs)
    frames, conventions, divergences, partial, missing, warnings = [], {}, {}, [], [], []
    recorded = {}  # the precision bound, the training tables, the profile: the last input that recorded them
    special, census, cases = {}, {}, {}
    for d in inputs:
        frames.append(frame(read_rows(d)))  # one input at a time: old and new schemas upgrade separately
        cases.update({p.name: p for p in sorted((d / "cases").glob("*.npz"))})
        meta = _meta(d)
        if meta is None:
            warnings.append(f"{d} has no meta.json: the conventions and divergence reasons of its run are unknown")
            continue
        notes, run = meta.get("notes") or {}, meta.get("run") or {}
        conventions.update({(c["layer"], c["framework"]): c for c in notes.get("conventions", [])})
        divergences.update({v["key"]: v for v in notes.get("divergences", [])})
        recorded.update({k: notes[k] for k in ("precision", "training", "profile", "floors") if notes.get(k)})
        special.update(notes.get("special") or {})  # shards run different layers: every one's declaration
        census.update({(e["layer"], e["framework"], e["dtype"]): e for e in notes.get("census", [])})
        if run.get("partial"):
            partial.append(f"{d} ({run.get('why') or 'partial'})")
            missing.extend(run.get("missing", []))
    run = {"partial": bool(partial), "missing": missing,
           "why": "merged from partial input(s): " + "; ".join(partial) if partial else ""}
    rows = _replays_in(pd.concat(frames, ignore_index=True), Path(out), cases)
    written = write_report(rows, out, cases=cases,
                           notes={"conventions": list(conventions.values()), "divergences": list(divergences.values()),
                                  **recorded, **({"special": special} if special else {}),
                                  **({"census": list(census.values())} if census else {})},
                           run=run)
    written.warnings[:0] = warnings
    return written


def main(argv=None, prog: str = "gradparity merge") -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--recover" not in argv:
        return directories_command(argv, prog, __doc__.splitlines()[0], merge, "report directories to merge",
                                   "directory for the merged report")
    parser = argparse.ArgumentParser(prog=f"{prog} --recover", description="write the rows a killed run left in "
                                     "DIR/.runs/ as a partial report in DIR/partial")
    parser.add_argument("directory", type=Path, help="the report directory the killed run wrote into")
    parser.add_argument("--recover", action="store_true", required=True)
    args = parser.parse_args(argv)
    from .recording import recover

    written = recover(args.directory)
    if not written:
        print(f"{parser.prog}: error: {args.directory} holds no rows of an unfinished run", file=sys.stderr)
        return 2
    for w in written:
        print(w.text)
    return 0

