"""Rows -> gradients.csv, summary.csv, meta.json, plots/*.png, report.html, checks.html:
``write_report``.

``gradients.csv`` has one row per ROW_KEY (case x framework x reference x
compared name); ``summary.csv`` one row per layer x framework x dtype;
``meta.json`` what the run recorded about the frameworks (``notes``) and
whether it finished (``run``); ``plots/*.png`` the plots (plots.py);
``report.html`` the page and ``checks.html`` every check that did not pass
(html.py); ``cases/`` the saved cases of the checks
that did not pass. The rows are read in files.py, the tables computed in
tables.py; files.publish keeps track of the files a report consists of, so a
rerun replaces exactly those.

The report reads only rows, notes and run: never the current adapters or
tolerance tables, so an old or merged report shows its own reasons.
"""

from __future__ import annotations

import json
from pathlib import Path

from .files import Written, csv_text, frame, publish, retire
from .files import read_rows  # noqa: F401 - where tests/test_report.py and test_examples.py import it from
from .html import checks_page, page
from .plots import render_plots
from .tables import by_family, divergence_table, layer_families, summarize


def write_report(rows, out_dir: Path, *, notes: dict | None = None, run: dict | None = None, worst: int = 40,
                 cases: dict | None = None, move_cases: bool = False) -> Written:
    """Write the report of ``rows`` into ``out_dir``: gradients.csv, summary.csv, meta.json,
    report.html, plots/, and cases/ (``cases``: {file name: saved case file}, moved there with
    ``move_cases``, else copied).

    ``notes``: what the run recorded (``{"conventions": [...], "divergences": [...], ...}``).
    ``run``: ``{"partial": bool, "missing": [what did not run], "why": str}``. A complete
    report replaces the previous one in ``out_dir`` and the partial report of an earlier
    interrupted run in ``out_dir/partial``; a partial report goes to ``out_dir/partial`` and
    never replaces a complete one. Only the files of those reports are replaced or
    removed: nothing else in ``out_dir`` is touched.
    """
    notes = {"conventions": [], "divergences": [], **(notes or {})}
    run = {"partial": False, "missing": [], "why": "", **(run or {})}
    out_dir = Path(out_dir)
    target = out_dir / "partial" if run["partial"] else out_dir
    df = frame(rows)
    if target != out_dir:  # the cases of a partial report are under partial/ too: so are their replay commands
        df["reproduce"] = df["reproduce"].str.replace(str(out_dir / "cases"), str(target / "cases"), regex=False)
    summary = summarize(df)
    divergences = divergence_table(df, notes)
    families = layer_families(df)
    plots = render_plots(df, list(dict.fromkeys(by_family(summary, families)["layer"])), families.get)
    # Everything is rendered before anything is written, so a failure leaves the old files.
    files = {
        "meta.json": json.dumps({"notes": notes, "run": run}, indent=2, default=str) + "\n",
        "summary.csv": csv_text(summary),
        "report.html": page(df, summary, divergences, notes, run, worst, plots),
        "checks.html": checks_page(df, run),
        **{f"plots/{name}.png": png for name, (_, png) in plots.items() if png},  # empty: could not be drawn
        "gradients.csv": csv_text(df),
    }
    brought = {f"cases/{name}": path for name, path in (cases or {}).items()}
    publish(target, files, moves=brought if move_cases else None, copies=None if move_cases else brought)
    if target == out_dir:
        retire(out_dir / "partial")  # an earlier interrupted run's: this report supersedes it

    verdicts = summary["verdict"].value_counts().to_dict()
    text = (("partial: " if run["partial"] else "") + f"{len(df)} checks, {len(summary)} layer x framework x dtype "
            "groups: " + ", ".join(f"{v} {k}" for k, v in sorted(verdicts.items())) + f"; written to {target}/")
    if target != out_dir and (out_dir / "gradients.csv").exists():
        text += f" ({out_dir}/ holds an earlier complete report, left untouched)"
    # A divergence whose condition held but explained nothing may no longer be true;
    # one whose condition never held was simply not reached by this run's cases.
    stale = divergences.query("cases_inside > 0 and rows_explained == 0")
    return Written(text, [f"known divergence {row.divergence}: its condition held in {row.cases_inside} case(s) "
                          f"but every check passed: is it still true? ({row.reason[:80]})"
                          for row in stale.itertuples()], target, summary=summary, frame=df)
