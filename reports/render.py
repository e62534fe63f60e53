"""Rows -> gradients.csv, summary.csv, meta.json, plots/*.png, report.html: ``write_report``.

``gradients.csv`` has one row per ROW_KEY (case x framework x reference x
compared name); ``summary.csv`` one row per layer x framework x dtype;
``meta.json`` what the run recorded about the frameworks (``notes``) and
whether it finished (``run``); ``plots/*.png`` the plots (plots.py);
``report.html`` the page (html.py). The rows are read in files.py, the tables
computed in tables.py.

The report reads only rows, notes and run: never the current adapters or
tolerance tables, so an old or merged report shows its own reasons.
"""

from __future__ import annotations

import json
from pathlib import Path

from .files import Written, csv_text, frame, write_atomically
from .files import read_rows  # noqa: F401 - where tests/test_report.py and test_examples.py import it from
from .html import page
from .plots import render_plots
from .tables import by_family, divergence_table, layer_families, summarize


def write_report(rows, out_dir: Path, *, notes: dict | None = None, run: dict | None = None,
                 worst: int = 40) -> Written:
    """Write gradients.csv, summary.csv, meta.json and report.html into ``out_dir``.

    ``notes``: ``{"conventions": [{layer, framework, convention, reason}], "divergences": [{key, layer,
    framework, dtype, reason, measured, bound}]}`` as the run recorded them. ``run``: ``{"partial": bool,
    "missing": [what did not run], "why": str}``. A partial report never replaces an existing one: it goes
    to ``out_dir/partial`` instead.
    """
    notes = {"conventions": [], "divergences": [], **(notes or {})}
    run = {"partial": False, "missing": [], "why": "", **(run or {})}
    out_dir = Path(out_dir)
    target = out_dir / "partial" if run["partial"] and (out_dir / "gradients.csv").exists() else out_dir
    df = frame(rows)
    summary = summarize(df)
    divergences = divergence_table(df, notes)
    families = layer_families(df)
    plots = render_plots(df, list(dict.fromkeys(by_family(summary, families)["layer"])), families.get)
    # Everything is rendered before anything is written, so a failure leaves the old files.
    files = {
        "meta.json": json.dumps({"notes": notes, "run": run}, indent=2, default=str) + "\n",
        "summary.csv": csv_text(summary),
        "report.html": page(df, summary, divergences, notes, run, worst, plots),
        "gradients.csv": csv_text(df),  # last: its presence means "a report is here"
    }
    target.mkdir(parents=True, exist_ok=True)
    if plots:
        (target / "plots").mkdir(exist_ok=True)
    for name, (_, png) in plots.items():
        if png:  # empty: the plot could not be drawn (its caption says why)
            write_atomically(target / "plots" / f"{name}.png", png)
    for name, text in files.items():
        write_atomically(target / name, text)

    verdicts = summary["verdict"].value_counts().to_dict()
    text = (("partial: " if run["partial"] else "") + f"{len(df)} checks, {len(summary)} layer x framework x dtype "
            "groups: " + ", ".join(f"{v} {k}" for k, v in sorted(verdicts.items())) + f"; written to {target}/")
    if target != out_dir:
        text += f" ({out_dir}/ holds an earlier report, left untouched)"
    # A divergence whose condition held but explained nothing may no longer be true;
    # one whose condition never held was simply not reached by this run's cases.
    stale = divergences.query("cases_inside > 0 and rows_explained == 0")
    return Written(text, [f"known divergence {row.divergence}: its condition held in {row.cases_inside} case(s) "
                          f"but every check passed: is it still true? ({row.reason[:80]})"
                          for row in stale.itertuples()], target)
