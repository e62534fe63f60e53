"""A run's rows on their way to the report: on disk as each test finishes, joined at the end.

While a run ``RUN`` writes into a report directory ``DIR``, what it produces lives in
``DIR/.runs/RUN/``:

* ``rows/WORKER.jsonl``: one JSON line per row, appended by each process (the only
  one, or each xdist worker) as each test finishes;
* ``rows/WORKER.census``: each group's plan (its edges, and what its framework refused);
* ``rows/WORKER.inflight``: the case a process is running (empty between cases), so a
  framework that kills its process still leaves the case that did it;
* ``cases/``: every case that did not pass, saved for replay.

``finish`` joins them into the report (``render.write_report``: DIR for a complete
run, DIR/partial for one that did not finish) and removes the run's directory. A
run whose main process was killed leaves it behind: ``leftovers`` finds such runs,
``recover`` writes each as a partial report. Rows that reached disk are never lost.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

RUNS = ".runs"


def run_dir(report_dir: Path, run: str) -> Path:
    return Path(report_dir) / RUNS / run


class Recorder:
    """Takes each test's rows: saves every case that did not pass (for replay) and
    appends the rows to this process's shard right away. ``cases`` is where cases
    are saved; ``replay_dir`` the directory their replay commands name (the
    report's cases/, where they will be when the report is written)."""

    def __init__(self, shards: Path | None, worker: str, cases: Path, replay_dir: Path,
                 strict_precision: bool = False):
        self.cases, self.replay_dir, self.strict_precision = Path(cases), Path(replay_dir), strict_precision
        self.shard = Path(shards) / f"{worker}.jsonl" if shards else None
        self._inflight = None
        if self.shard is not None:
            self.shard.parent.mkdir(parents=True, exist_ok=True)
            self._inflight = self.shard.with_suffix(".inflight").open("w")

    def running(self, case) -> None:
        """Say which case is about to run (rewritten in place: microseconds)."""
        if self._inflight is not None:
            from gradparity.reference.case import to_json

            self._mark(to_json(case))

    def _mark(self, text: str) -> None:
        self._inflight.seek(0)
        self._inflight.write(text)
        self._inflight.truncate()
        self._inflight.flush()

    def census(self, entry: dict) -> None:
        """A group's plan (its edges, and what its framework refused), for the report."""
        if self.shard is not None:
            with self.shard.with_suffix(".census").open("a", encoding="utf-8") as f:
                f.write(json.dumps(entry) + "\n")

    def close(self) -> None:
        if self._inflight is not None:
            self._inflight.close()
            Path(self._inflight.name).unlink(missing_ok=True)
            self._inflight = None

    def save(self, case) -> str:
        """Save a case for replay; the command that replays it (without --framework)."""
        name = f"{case.layer}-{case.id}.npz"
        case.save(self.cases / name)
        return f"gradparity replay {self.replay_dir / name}"

    def add(self, rows: list[dict], case, example: str = "") -> list[dict]:
        """Record a case's rows (``example``: "first failing" or "minimal" for hypothesis'
        own account of a failure, "" otherwise)."""
        if self._inflight is not None:
            self._mark("")
        if self.strict_precision:  # before the failing cases are saved: a precision failure gets its replay
            from gradparity.reports.compare import enforce_precision

            rows = enforce_precision(rows)
        if any(r["status"] != "pass" for r in rows):
            command = self.save(case)
            for r in rows:
                if r["status"] != "pass":
                    framework, _, mode = r["framework"].partition(".")  # "torch.compile": torch in mode compile
                    r["reproduce"] = f"{command} --framework {framework}" + (f" --mode {mode}" if mode else "")
        for r in rows:
            r["example"] = example
        if self.shard is not None:
            try:
                with self.shard.open("a", encoding="utf-8") as f:
                    f.write("".join(json.dumps(_plain(r)) + "\n" for r in rows))
            except FileNotFoundError:
                pass  # an interrupted run's report was written (and its directory removed) while this case ran
        return rows


def _plain(row: dict) -> dict:
    """Builtin types only (no NumPy scalars), NaN as null: one JSON line per row."""
    out = {}
    for k, v in row.items():
        v = v.item() if hasattr(v, "item") else v
        out[k] = None if isinstance(v, float) and v != v else v
    return out


def _lines(paths) -> list[dict]:
    found = []
    for path in paths:
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                found.append(json.loads(line))
            except json.JSONDecodeError:
                pass  # the last line of a process that died mid-write
    return found


def rows_of(directory: Path) -> list[dict]:
    """Every row a run's processes recorded."""
    return _lines(sorted((Path(directory) / "rows").glob("*.jsonl")))


def census_of(directory: Path) -> list[dict]:
    """The groups' plans a run recorded, one entry per layer x framework x dtype."""
    return list({(e["layer"], e["framework"], e["dtype"]): e
                 for e in _lines(sorted((Path(directory) / "rows").glob("*.census")))}.values())


def unfinished_cases(directory: Path, replay_dir: Path) -> list[str]:
    """The cases some process was running when it stopped, saved for replay: one line each."""
    from gradparity.reference.case import from_json

    found = []
    for marker in sorted((Path(directory) / "rows").glob("*.inflight")):
        text = marker.read_text(encoding="utf-8")
        if text:
            case = from_json(text)
            name = f"{case.layer}-{case.id}.npz"
            case.save(Path(directory) / "cases" / name)
            found.append(f"{case.describe()} was running when its process stopped: "
                         f"gradparity replay {Path(replay_dir) / name}")
    return found


def run_notes(rows: list[dict], strict_precision: bool = False) -> dict:
    """What the report records of this run's code: each framework's conventions for the layers
    that ran, the known divergences, the precision bound, the defaults table (when training
    steps ran), and which inputs take NaN and Inf (the report reads no catalogue)."""
    from gradparity.adapters import ADAPTERS
    from gradparity.reference import LAYERS
    from gradparity.reports.divergences import divergence_notes
    from gradparity.reports.tolerances import PRECISION

    conventions = []
    for layer, fw in sorted({(r["layer"], r["framework"]) for r in rows}):
        c = ADAPTERS[fw].convention(layer) if fw in ADAPTERS else None
        if c is not None:
            conventions.append({"layer": layer, "framework": fw,
                                "convention": ", ".join(f"{k}={v}" for k, v in c.values.items()),
                                "reason": c.reason})
    notes = {"conventions": conventions, "divergences": divergence_notes(),
             "precision": {"ulps": PRECISION.ulps, "reason": PRECISION.reason, "strict": strict_precision}}
    if any(r.get("family") == "training step" for r in rows):  # the defaults table, as this run's code knows it
        from gradparity.reports import defaults

        notes["training"] = {"defaults": defaults.DEFAULTS, "gaps": defaults.summary().to_dict("records")}
    special = {layer: list(LAYERS[layer].nonfinite) for layer in sorted({r["layer"] for r in rows})
               if layer in LAYERS and LAYERS[layer].nonfinite}
    if special:
        notes["special"] = special
    return notes


def finish(directory: Path, report_dir: Path, run: dict, notes: dict, strict_precision: bool = False):
    """Write the report of the run recorded in ``directory`` (partial if ``run`` says so, or
    if a process stopped inside a case), bring its cases into the report, and remove the
    run's directory; ``notes`` adds to what ``run_notes`` records."""
    from .render import write_report

    directory, report_dir = Path(directory), Path(report_dir)
    unfinished = unfinished_cases(directory, report_dir / "partial" / "cases")  # such a run is partial
    if unfinished:
        run = {**run, "partial": True, "why": "; ".join([run.get("why", ""), *unfinished]).strip("; ")}
    rows = rows_of(directory)
    notes = {**run_notes(rows, strict_precision), **notes, "census": census_of(directory)}
    cases = {p.name: p for p in sorted((directory / "cases").glob("*.npz"))}
    written = write_report(rows, report_dir, notes=notes, run=run, cases=cases, move_cases=True)
    shutil.rmtree(directory, ignore_errors=True)
    runs = report_dir / RUNS
    if runs.is_dir() and not any(runs.iterdir()):
        runs.rmdir()
    return written


def leftovers(report_dir: Path, current: str | None = None) -> list[dict]:
    """Runs that wrote into ``report_dir`` and never finished (their main process was
    killed): their id, rows recorded and when they last wrote."""
    found = []
    for directory in sorted((Path(report_dir) / RUNS).glob("*")):
        if directory.name == current or not directory.is_dir():
            continue
        shards = list((directory / "rows").glob("*.jsonl"))
        rows = sum(len(p.read_text(encoding="utf-8").splitlines()) for p in shards)
        last = max((p.stat().st_mtime for p in directory.rglob("*")), default=directory.stat().st_mtime)
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(last))
        found.append({"run": directory.name, "rows": rows, "when": when, "path": directory})
    return found


def recover(report_dir: Path) -> list:
    """Write the report of every run left behind in ``report_dir`` (partial: it never
    finished), each in turn into ``report_dir/partial``; the last one stays there."""
    written = []
    for left in leftovers(report_dir):
        run = {"partial": True, "missing": [], "why": f"recovered from run {left['run']}, whose main process stopped "
                                                      f"before writing its report (last write {left['when']})"}
        written.append(finish(left["path"], report_dir, run, {}))
    return written
