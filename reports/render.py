"""Rows -> gradients.csv, summary.csv, report.html.

``gradients.csv`` has one row per case x framework x tensor; ``summary.csv``
one row per layer x framework x dtype; ``report.html`` shows the summary first,
colour-coded, then the conventions and known divergences, then every row that
did not pass (with its reproduction), then the worst passing cases.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from .compare import COLUMNS, STATUSES
from .tolerances import KNOWN_DIVERGENCES, divergence_tag

KEY = ["layer", "framework", "dtype"]
NUMERIC = ["max_abs_err", "max_rel_err", "err_eps", "scale", "condition", "atol", "rtol"]
ROW_KEY = ["layer", "framework", "dtype", "case", "tensor"]
COLOURS = {"pass": "#d8f0d8", "fail": "#f6c6c6", "error": "#f0b0d8",
           "known_divergence": "#fbe3b4", "not_applicable": "#e4e4e4"}


@dataclass
class Written:
    text: str
    warnings: list = field(default_factory=list)


def frame(rows) -> pd.DataFrame:
    """Rows as a DataFrame with the report's columns, each (case, framework, tensor) once."""
    df = pd.DataFrame(list(rows) if not isinstance(rows, pd.DataFrame) else rows, columns=COLUMNS)
    for col in NUMERIC:
        df[col] = pd.to_numeric(df[col], errors="coerce")
    for col in set(COLUMNS) - set(NUMERIC):
        df[col] = df[col].astype("string").fillna("").astype(str)
    return df.drop_duplicates(ROW_KEY, keep="last").sort_values(ROW_KEY, kind="stable").reset_index(drop=True)


def summarize(df: pd.DataFrame) -> pd.DataFrame:
    """Per layer x framework x dtype: cases, worst errors, tolerance, counts by status."""
    if df.empty:
        return pd.DataFrame(columns=KEY + ["verdict", "cases", "checks", *STATUSES])
    counts = pd.crosstab([df[k] for k in KEY], df["status"]).reindex(columns=list(STATUSES), fill_value=0)
    agg = df.groupby(KEY).agg(
        framework_version=("framework_version", "last"),
        cases=("case", "nunique"),
        checks=("tensor", "size"),
        worst_rel_err=("max_rel_err", "max"),
        worst_err_eps=("err_eps", "max"),
        rtol=("rtol", "max"),
        max_condition=("condition", "max"),
        convention=("convention", "last"),
    )
    out = agg.join(counts).reset_index()
    out["verdict"] = "pass"
    out.loc[out["not_applicable"] == out["checks"], "verdict"] = "not_applicable"
    out.loc[out["known_divergence"] > 0, "verdict"] = "known_divergence"
    out.loc[(out["fail"] + out["error"]) > 0, "verdict"] = "fail"
    cols = KEY + ["verdict", "cases", "checks", *STATUSES, "worst_rel_err", "worst_err_eps", "rtol", "max_condition",
                  "convention", "framework_version"]
    return out[cols]


def at_a_glance(summary: pd.DataFrame) -> str:
    """One line per layer, one column per framework x dtype: the verdict, colour-coded."""
    if summary.empty:
        return "<p>No checks ran.</p>"
    grid = summary.pivot(index="layer", columns=["framework", "dtype"], values="verdict").fillna("")
    styler = (grid.style.map(lambda v: f"background-color: {COLOURS.get(v, '')}")
              .set_table_attributes('class="grid"'))
    return styler.to_html()


def divergence_table(df: pd.DataFrame) -> pd.DataFrame:
    """Every recorded divergence: how many cases fell inside its condition in this
    run, and how many checks it explained."""
    rows = []
    for d in KNOWN_DIVERGENCES:
        inside = df[df["divergence"] == divergence_tag(d)]
        rows.append({"divergence": divergence_tag(d), "reason": d.reason, "measured": d.measured,
                     "bound": "any error" if d.bound is None else f"max_rel_err <= {d.bound:g}",
                     "cases_inside": inside["case"].nunique(),
                     "rows_explained": int((inside["status"] == "known_divergence").sum())})
    return pd.DataFrame(rows, columns=["divergence", "reason", "measured", "bound", "cases_inside",
                                       "rows_explained"])


def convention_table(df: pd.DataFrame) -> pd.DataFrame:
    """For every layer x framework in the run: the convention it follows at the
    points the math leaves open, and the evidence."""
    from ..adapters import ADAPTERS

    rows = []
    for (layer, fw), _ in df.groupby(["layer", "framework"]):
        c = ADAPTERS[fw].convention(layer) if fw in ADAPTERS else None
        if c is not None:
            rows.append({"layer": layer, "framework": fw,
                         "convention": ", ".join(f"{k}={v}" for k, v in c.values.items()), "reason": c.reason})
    return pd.DataFrame(rows, columns=["layer", "framework", "convention", "reason"])


def _styled(df: pd.DataFrame, status_col: str, caption: str) -> str:
    if df.empty:
        return f"<h2>{html.escape(caption)}</h2><p>None.</p>"
    fmt = {c: "{:.3g}" for c in df.columns if df[c].dtype.kind == "f"}
    styler = (df.style.hide(axis="index").format(fmt, na_rep="")
              .map(lambda v: f"background-color: {COLOURS.get(v, '')}", subset=[status_col])
              .set_table_attributes('class="grid"'))
    return f"<h2>{html.escape(caption)}</h2>" + styler.to_html()


def _table(df: pd.DataFrame, caption: str) -> str:
    body = df.style.hide(axis="index").set_table_attributes('class="grid"').to_html() if not df.empty else "<p>None.</p>"
    return f"<h2>{html.escape(caption)}</h2>" + body


def write_report(rows, out_dir: Path, *, worst: int = 40) -> Written:
    out_dir.mkdir(parents=True, exist_ok=True)
    df = frame(rows)
    summary = summarize(df)
    df.to_csv(out_dir / "gradients.csv", index=False)
    summary.to_csv(out_dir / "summary.csv", index=False)
    divergences = divergence_table(df)
    bad = df[df["status"] != "pass"].sort_values(["status", "err_eps"], ascending=[True, False])
    worst_pass = df[df["status"] == "pass"].nlargest(worst, "err_eps")
    versions = ", ".join(f"{fw} {v}" for fw, v in df.groupby("framework")["framework_version"].last().items())
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    shown = ["layer", "framework", "dtype", "tensor", "shape", "status", "max_abs_err", "max_rel_err",
             "err_eps", "condition", "atol", "rtol", "detail", "attrs"]
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>gradparity report</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:110em}}
table.grid{{border-collapse:collapse;font-size:13px}} table.grid td,table.grid th{{border:1px solid #ccc;padding:3px 6px}}
table.grid th{{background:#f4f4f4}} code{{font-size:12px}}</style></head><body>
<h1>gradparity: gradients against the float64 oracle</h1>
<p>{len(df)} tensor checks over {df['case'].nunique()} cases; {html.escape(versions or 'no framework ran')}; {stamp}.</p>
<p>Each check compares a framework's output or gradient with the NumPy oracle evaluated in float64 on the same
(rounded) numbers. It passes when <code>max |framework - oracle| &le; atol = rtol &times; condition &times; scale</code>, with
<code>scale = max(max|oracle tensor|, floor)</code>, the floor being max|cotangent| for a gradient and the largest input magnitude for the output; <code>err_eps</code> is the error in units of the
dtype's eps relative to that scale. Statuses: {', '.join(STATUSES)}.</p>
<h2>At a glance</h2>
{at_a_glance(summary)}
{_styled(summary, 'verdict', 'Summary: layer x framework x dtype')}
{_table(convention_table(df), 'Conventions: what each framework does where the math leaves a choice')}
{_styled(divergences.assign(status=lambda d: 'known_divergence'), 'status', 'Known divergences (reason and measured behaviour)')}
{_styled(bad[shown + ['reproduce']], 'status', 'Every check that did not pass (with its reproduction)')}
{_styled(worst_pass[shown], 'status', f'The {worst} largest errors that passed')}
</body></html>"""
    (out_dir / "report.html").write_text(page, encoding="utf-8")
    verdicts = summary["verdict"].value_counts().to_dict() if not summary.empty else {}
    text = (f"{len(df)} checks, {len(summary)} layer x framework x dtype groups: "
            + ", ".join(f"{v} {k}" for k, v in sorted(verdicts.items())) + f"; written to {out_dir}/")
    # A divergence whose condition held but explained nothing may no longer be true;
    # one whose condition never held was simply not reached by this run's cases.
    stale = divergences[(divergences["cases_inside"] > 0) & (divergences["rows_explained"] == 0)]
    return Written(text, [f"known divergence {row.divergence}: its condition held in {row.cases_inside} case(s) "
                          f"but every check passed: is it still true? ({row.reason[:80]})"
                          for row in stale.itertuples()])
