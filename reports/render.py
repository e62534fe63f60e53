"""Rows -> gradients.csv, summary.csv, meta.json, report.html.

``gradients.csv`` has one row per ROW_KEY (case x framework x reference x
compared name); ``summary.csv`` one row per layer x framework x dtype;
``meta.json`` what the run recorded about the frameworks (``notes``) and
whether it finished (``run``); ``report.html`` shows the verdicts first,
colour-coded, then the conventions and known divergences as the run recorded
them, the checks that were not applicable, every check that did not pass (with
its reproduction), and the worst passing ones.

The report reads only rows, notes and run: never the current adapters or
tolerance tables, so an old or merged report shows its own reasons.
Every file is replaced atomically, every string from the data is escaped in
the HTML, and CSV text cells that a spreadsheet would run as a formula are
neutralized (and restored exactly by ``read_rows``).
"""

from __future__ import annotations

import html
import json
import os
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from .rows import COLUMNS, GROUP_KEY, NUMERIC, ROW_KEY, STATUSES

PARTLY_NA = "pass (partly n/a)"
# A group's verdict, worst first: any fail or error; any known divergence; nothing
# could be checked; everything checked passed but some checks were not applicable;
# every check ran and passed.
VERDICTS = ("fail", "known_divergence", "not_applicable", PARTLY_NA, "pass")
COLOURS = {"pass": "#c8ecc8", PARTLY_NA: "#ecf7e4", "fail": "#f6c6c6", "error": "#f0b0d8",
           "known_divergence": "#fbe3b4", "not_applicable": "#e4e4e4"}
SUMMARY_COLUMNS = GROUP_KEY + ["verdict", "cases", "checks", "checked", *STATUSES, "worst_rel_err", "worst_err_eps",
                               "rtol", "max_condition", "convention", "framework_version"]
# A spreadsheet runs a cell starting with one of these as a formula; "'" is
# prefixed too so that read_rows can strip exactly one "'" from every such cell.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "'")


@dataclass
class Written:
    text: str
    warnings: list = field(default_factory=list)
    path: Path | None = None  # the directory actually written (``out_dir/partial`` when diverted)


def frame(rows) -> pd.DataFrame:
    """Rows as a DataFrame with the report's columns, each ROW_KEY once (the last wins), sorted.

    Rows from reports older than ``reference``/``kind``/``name`` are upgraded:
    reference "oracle"; tensor "out" becomes kind "out", name "y"; any other
    tensor a gradient of that name.
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
    return df.drop_duplicates(ROW_KEY, keep="last").sort_values(ROW_KEY, kind="stable").reset_index(drop=True)


def summarize(df: pd.DataFrame) -> pd.DataFrame:
    """Per layer x framework x dtype: cases, checks, how many were checked (not
    not_applicable), counts by status, worst errors, tolerance, and a verdict."""
    if df.empty:
        return pd.DataFrame(columns=SUMMARY_COLUMNS)
    counts = pd.crosstab([df[k] for k in GROUP_KEY], df["status"]).reindex(columns=list(STATUSES), fill_value=0)
    agg = df.groupby(GROUP_KEY).agg(
        framework_version=("framework_version", "last"),
        cases=("case", "nunique"),
        checks=("status", "size"),
        worst_rel_err=("max_rel_err", "max"),
        worst_err_eps=("err_eps", "max"),
        rtol=("rtol", "max"),
        max_condition=("condition", "max"),
        convention=("convention", "last"),
    )
    out = agg.join(counts).reset_index()
    out["checked"] = out["checks"] - out["not_applicable"]
    out["verdict"] = np.select(
        [out["fail"] + out["error"] > 0, out["known_divergence"] > 0, out["checked"] == 0, out["not_applicable"] > 0],
        VERDICTS[:4], default="pass")
    return out[SUMMARY_COLUMNS]


def glance_label(s) -> str:
    """The verdict, plus how many checks ran when only some could ("pass 16/78")."""
    if s.checked in (0, s.checks):
        return s.verdict
    return f"{'pass' if s.verdict == PARTLY_NA else s.verdict} {s.checked}/{s.checks}"


def at_a_glance(summary: pd.DataFrame) -> str:
    """One line per layer, one column per framework x dtype: the verdict, colour-coded."""
    if summary.empty:
        return "<p>No checks ran.</p>"
    cells = summary.assign(label=summary.apply(glance_label, axis=1),
                           colour=summary["verdict"].map(lambda v: f"background-color: {COLOURS.get(v, '')}"))
    labels = cells.pivot(index="layer", columns=["framework", "dtype"], values="label").fillna("")
    colours = cells.pivot(index="layer", columns=["framework", "dtype"], values="colour").fillna("")
    return (labels.style.apply(lambda _: colours, axis=None)
            .format(escape="html").format_index(escape="html", axis=0).format_index(escape="html", axis=1)
            .set_table_attributes('class="grid"').to_html())


def divergence_table(df: pd.DataFrame, notes: dict) -> pd.DataFrame:
    """Every divergence the run recorded: how many cases fell inside its condition
    here and how many checks it explained. A key named by rows but missing from
    the notes (an input merged without meta.json) is listed as unrecorded."""
    recorded = {d["key"]: d for d in notes["divergences"]}
    keys = list(recorded) + sorted(set(df["divergence"]) - set(recorded) - {""})
    rows = []
    for key in keys:
        d = recorded.get(key, {"reason": "(not recorded: this report's notes do not describe it)"})
        # a case the framework could not express says nothing about the divergence
        inside = df[(df["divergence"] == key) & (df["status"] != "not_applicable")]
        rows.append({"divergence": key, "layer": d.get("layer", ""), "framework": d.get("framework", ""),
                     "dtype": d.get("dtype", ""), "reason": d.get("reason", ""), "measured": d.get("measured", ""),
                     "bound": d.get("bound", ""), "cases_inside": inside["case"].nunique(),
                     "rows_explained": int((inside["status"] == "known_divergence").sum())})
    return pd.DataFrame(rows, columns=["divergence", "layer", "framework", "dtype", "reason", "measured", "bound",
                                       "cases_inside", "rows_explained"])


def convention_table(df: pd.DataFrame, notes: dict) -> pd.DataFrame:
    """The recorded convention and its evidence, for each layer x framework in
    these rows (the notes may describe layers this run deselected)."""
    ran = set(zip(df["layer"], df["framework"]))
    rows = [{k: c.get(k, "") for k in ("layer", "framework", "convention", "reason")}
            for c in notes["conventions"] if (c.get("layer"), c.get("framework")) in ran]
    table = pd.DataFrame(rows, columns=["layer", "framework", "convention", "reason"])
    return table.sort_values(["layer", "framework"])


def not_applicable_table(df: pd.DataFrame) -> pd.DataFrame:
    """Checks that could not be made, by layer x framework x dtype and reason."""
    na = df[df["status"] == "not_applicable"]
    return (na.groupby(GROUP_KEY + ["detail"]).agg(checks=("status", "size"),
                                                  names=("name", lambda s: ", ".join(sorted(set(s)))))
            .reset_index().rename(columns={"detail": "reason"}))


def _html_table(df: pd.DataFrame, caption: str, status_col: str | None = None) -> str:
    """A captioned table, every cell HTML-escaped, the status column colour-coded."""
    head = f"<h2>{html.escape(caption)}</h2>"
    if df.empty:
        return head + "<p>None.</p>"
    fmt = {c: "{:.3g}" for c in df.columns if df[c].dtype.kind == "f"}
    styler = df.style.hide(axis="index").format(fmt, na_rep="", escape="html").set_table_attributes('class="grid"')
    if status_col:
        styler = styler.map(lambda v: f"background-color: {COLOURS.get(v, '')}", subset=[status_col])
    return head + styler.to_html()


def _neutralized(df: pd.DataFrame) -> pd.DataFrame:
    """Text cells a spreadsheet would run as a formula, prefixed with "'"; numbers untouched."""
    out = df.copy()
    for col in out.columns:
        if not pd.api.types.is_numeric_dtype(out[col]):
            out[col] = out[col].map(lambda v: f"'{v}" if isinstance(v, str) and v.startswith(FORMULA_START) else v)
    return out


def _csv(df: pd.DataFrame) -> str:
    # CRLF line ends (RFC 4180) because the csv module quotes a cell holding a
    # line-end character only if it is in the terminator: with "\n", a bare "\r"
    # in a detail would go out unquoted and split the row when read back.
    return _neutralized(df).to_csv(index=False, lineterminator="\r\n")


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


def _write_atomically(path: Path, text: str) -> None:
    """Write a temporary file beside ``path``, then rename it over ``path``: a
    reader, or a crash, sees the old file or the new one, never half of one."""
    # Not tempfile.mkstemp: its files are private (0600), and the report should get
    # the same permissions as any file the user writes.
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "x", encoding="utf-8", newline="") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _partial_banner(run: dict) -> str:
    if not run["partial"]:
        return ""
    missing = [str(m) for m in run["missing"]]
    shown = ", ".join(m if len(m) <= 120 else m[:117] + "..." for m in missing[:10])
    more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
    return (f'<p class="partial"><strong>partial</strong>: {html.escape(run["why"] or "the run did not finish")}.'
            f' Did not run: {html.escape(shown + more) if missing else "unknown"}.</p>')


def _page(df, summary, divergences, notes, run, worst) -> str:
    bad = df[~df["status"].isin(["pass", "not_applicable"])].sort_values(["status", "err_eps"],
                                                                         ascending=[True, False])
    worst_pass = df[df["status"] == "pass"].nlargest(worst, "err_eps")
    versions = ", ".join(f"{fw} {v}" for fw, v in df.groupby("framework")["framework_version"].last().items())
    references = ", ".join(sorted(set(df["reference"]))) or "none"
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    partial = " (partial)" if run["partial"] else ""
    shown = ["layer", "framework", "reference", "dtype", "kind", "name", "shape", "status", "max_abs_err",
             "max_rel_err", "err_eps", "condition", "atol", "rtol", "detail", "divergence", "attrs"]
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>gradparity report{partial}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:110em}}
table.grid{{border-collapse:collapse;font-size:13px}} table.grid td,table.grid th{{border:1px solid #ccc;padding:3px 6px}}
table.grid th{{background:#f4f4f4}} code{{font-size:12px}}
.partial{{background:#fbe3b4;border:2px solid #d08000;padding:.5em 1em;font-size:16px}}</style></head><body>
<h1>gradparity: gradients against a reference{partial}</h1>
{_partial_banner(run)}
<p>{len(df)} checks over {df['case'].nunique()} cases; compared with: {html.escape(references)};
{html.escape(versions or 'no framework ran')}; {stamp}.</p>
<p>Each check compares a framework's output or gradient with its reference, normally the NumPy oracle evaluated in
float64 on the same (rounded) numbers. It passes when
<code>max |framework - reference| &le; atol = rtol &times; condition &times; scale</code>, with
<code>scale = max(max|reference tensor|, floor)</code>, the floor being max|cotangent| for a gradient and the largest
input magnitude for an output; <code>err_eps</code> is the error in units of the dtype's eps relative to that scale.
Statuses: {', '.join(STATUSES)}. A group's verdict is one of: {', '.join(VERDICTS)};
"{PARTLY_NA}" means every check that could run passed but some were not applicable (the grid shows checked/checks).</p>
<h2>At a glance</h2>
{at_a_glance(summary)}
{_html_table(summary, 'Summary: layer x framework x dtype', 'verdict')}
{_html_table(convention_table(df, notes), 'Conventions: what each framework does where the math leaves a choice')}
{_html_table(divergences, 'Known divergences (reason and measured behaviour, as recorded by the run)')}
{_html_table(not_applicable_table(df), 'Checks that were not applicable (not run, not passed)')}
{_html_table(bad[shown + ['reproduce']], 'Every check that did not pass (with its reproduction)', 'status')}
{_html_table(worst_pass[shown], f'The {worst} largest errors that passed', 'status')}
</body></html>"""


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
    # Everything is rendered before anything is written, so a failure leaves the old files.
    files = {
        "meta.json": json.dumps({"notes": notes, "run": run}, indent=2, default=str) + "\n",
        "summary.csv": _csv(summary),
        "report.html": _page(df, summary, divergences, notes, run, worst),
        "gradients.csv": _csv(df),  # last: its presence means "a report is here"
    }
    target.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        _write_atomically(target / name, text)

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
