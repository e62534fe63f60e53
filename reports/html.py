"""The report page: report.html as one string (``page``), self-contained (plots inline, no external resource,
one inline script that sorts a table on a click on a heading), every string from the data escaped; and the
style sheet, script and verdict colours that drift.html shares.

The page opens with a table of contents, then shows the verdicts, colour-coded, layers grouped by family, the
plots, precision, special values and training steps, the conventions and known divergences as the run recorded
them, the checks that were not applicable, every check that did not pass grouped by layer and divergence (with
its reproduction), and the worst passing ones.
"""

from __future__ import annotations

import base64
import html
from datetime import datetime, timezone

import pandas as pd

from .rows import STATUSES
from .tables import (JUDGED, PARTLY_NA, VERDICTS, by_family, checks, convention_table, keeps_and_loses,
                     layer_families, nonfinite_table, not_applicable_table, not_passing_groups, precision_table,
                     step_table, subnormal_table)

STYLE = """body{font-family:system-ui,sans-serif;margin:1.5em;max-width:110em}
table.grid{border-collapse:collapse;font-size:13px;margin-bottom:1em}
table.grid td,table.grid th{border:1px solid #ccc;padding:3px 6px;vertical-align:top}
table.grid th{background:#f4f4f4}
table.wide{width:100%}
table.wide td{overflow-wrap:break-word;max-width:36em} table.wide th{overflow-wrap:anywhere}
table.wide td.long{overflow-wrap:anywhere;min-width:6em}
table.sortable thead th{cursor:pointer} table.sortable thead th:hover{background:#e4e4f4}
code{font-size:12px} h2{margin-top:1.6em;border-bottom:1px solid #ddd} h3{margin-bottom:.3em}
nav.toc{background:#f8f8f8;border:1px solid #ddd;padding:.4em 1.2em;display:inline-block}
nav.toc ol{margin:.2em 0;padding-left:1.4em} nav.toc ol ol{font-size:90%}
details{margin:.5em 0} summary{cursor:pointer;font-weight:600}
figure{margin:0} figure img{max-width:100%;border:1px solid #ddd}
.partial{background:#fbe3b4;border:2px solid #d08000;padding:.5em 1em;font-size:16px}"""

# Sorts a table.sortable on a click on a heading (numbers as numbers); no network, no library.
SORT_SCRIPT = """document.querySelectorAll('table.sortable').forEach(function(t){
 var head=t.tHead.rows[t.tHead.rows.length-1];
 Array.prototype.forEach.call(head.cells,function(th,i){th.title='click to sort';th.addEventListener('click',function(){
  var body=t.tBodies[0],rows=Array.prototype.slice.call(body.rows),dir=th.dataset.dir==='asc'?-1:1;
  th.dataset.dir=dir>0?'asc':'desc';
  var key=function(r){var c=r.cells[i],s=c?c.textContent.trim():'';return (s!==''&&isFinite(s))?parseFloat(s):s;};
  rows.sort(function(a,b){var x=key(a),y=key(b);
   if(typeof x==='number'&&typeof y==='number')return (x-y)*dir;
   if(typeof x==='number')return -dir; if(typeof y==='number')return dir;
   return String(x).localeCompare(String(y))*dir;});
  rows.forEach(function(r){body.appendChild(r);});});});});"""

# A status's or a verdict's background colour, here and in drift.html.
COLOURS = {"pass": "#c8ecc8", PARTLY_NA: "#ecf7e4", "fail": "#f6c6c6", "error": "#f0b0d8",
           "known_divergence": "#fbe3b4", "not_applicable": "#e4e4e4"}

STATUS_COLUMNS = ("status", "verdict")
LONG_COLUMNS = ("detail", "reproduce", "attrs", "reason", "measured", "names", "divergence", "convention",
                "bound", "changes", "behind", "where", "lost", "example")


def _table(df: pd.DataFrame, *, wide: bool = False, sortable: bool = True) -> str:
    """A table, every cell HTML-escaped, status and verdict columns colour-coded;
    ``wide`` tables take the page's width and wrap long cells; a ``sortable``
    one sorts on a click on a column heading (the page's inline script)."""
    if df.empty:
        return "<p>None.</p>"
    fmt = {c: "{:.3g}" for c in df.columns if df[c].dtype.kind == "f"}
    classes = "grid" + (" wide" if wide else "") + (" sortable" if sortable else "")
    styler = df.style.hide(axis="index").format(fmt, na_rep="", escape="html").set_table_attributes(
        f'class="{classes}"')
    long = [c for c in df.columns if str(c).split(" ")[0] in LONG_COLUMNS]
    if long:  # long text without spaces may break anywhere; a short word never does
        styler = styler.set_td_classes(pd.DataFrame("long", index=df.index, columns=long))
    for col in [c for c in df.columns if c in STATUS_COLUMNS or str(c).endswith(" verdict")]:
        styler = styler.map(lambda v: f"background-color: {COLOURS.get(v, '')}", subset=[col])
    return styler.to_html()


def _section(anchor: str, caption: str, body: str, level: int = 2) -> str:
    """A heading with its anchor, then ``body``."""
    return f'<h{level} id="{html.escape(anchor)}">{html.escape(caption)}</h{level}>\n{body}'


def glance_label(s) -> str:
    """The verdict, plus how many checks ran when only some could ("pass 16/78")."""
    if s.checked in (0, s.checks):
        return s.verdict
    return f"{'pass' if s.verdict == PARTLY_NA else s.verdict} {s.checked}/{s.checks}"


def at_a_glance(summary: pd.DataFrame, families: dict) -> str:
    """One line per layer (grouped by family; ``families``: layer -> family), one column per framework x dtype:
    the verdict, colour-coded."""
    if summary.empty:
        return "<p>No checks ran.</p>"
    cells = by_family(summary, families).assign(
        label=lambda t: t.apply(glance_label, axis=1),
        colour=lambda t: t["verdict"].map(lambda v: f"background-color: {COLOURS.get(v, '')}"))
    order = list(dict.fromkeys(zip(cells["family"], cells["layer"])))
    labels = cells.pivot(index=["family", "layer"], columns=["framework", "dtype"], values="label")
    colours = cells.pivot(index=["family", "layer"], columns=["framework", "dtype"], values="colour")
    labels, colours = labels.reindex(order).fillna(""), colours.reindex(order).fillna("")
    return (labels.style.apply(lambda _: colours, axis=None)
            .format(escape="html").format_index(escape="html", axis=0).format_index(escape="html", axis=1)
            .set_table_attributes('class="grid glance"').to_html())


def _partial_banner(run: dict) -> str:
    """What a partial run did not run, and why; nothing for a whole run."""
    if not run["partial"]:
        return ""
    missing = [str(m) for m in run["missing"]]
    shown = ", ".join(m if len(m) <= 120 else m[:117] + "..." for m in missing[:10])
    more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
    return (f'<p class="partial"><strong>partial</strong>: {html.escape(run["why"] or "the run did not finish")}.'
            f' Did not run: {html.escape(shown + more) if missing else "unknown"}.</p>')


def _precision_section(df: pd.DataFrame, notes: dict) -> str:
    bound = notes.get("precision", {})
    judged = df["precision"].isin(JUDGED)
    unmeasured = df[(df["precision"] == "not measured") & df["status"].isin(["pass", "fail"])]
    return (f"<p>Each element's error relative to the element itself, in ulps of the case dtype (the dtype's "
            f"spacing at |exact value|), wherever the exact value is a normal number of the dtype: exact zeros, "
            f"subnormal exact values and elements the oracle could not resolve are left out and counted in "
            f"<code>ulp_oracle</code> (gradients.csv). For the element-wise layers (activations, the losses) the "
            f"exact value comes from the precision oracle (mpmath, evaluated at two precisions; an element where they "
            f"disagree is unresolved, never guessed); float32 checks of other layers are measured against the "
            f"float64 oracle (no verdict); float64 checks of other layers are not measured. A judged check "
            f"<em>lost</em> digits when its worst element is more than "
            f"{html.escape(str(bound.get('ulps', '?')))} ulps off ({html.escape(bound.get('reason', ''))}). "
            + ("These findings fail the run (--strict-precision). " if bound.get("strict") else
               "Informational: these findings do not fail the run; --strict-precision makes them fail. ")
            + f"{int(judged.sum())} checks judged, {int((df['precision'] == 'lost').sum())} lost digits; "
            f"{len(unmeasured)} checks not measured.</p>"
            + _section("precision-worst", "Worst element per layer x framework x dtype, and where digits are lost",
                       _table(precision_table(df), wide=True), level=3)
            + _section("precision-keeps",
                       "Where one framework keeps the digits another loses (same case, same tensor)",
                       _table(keeps_and_loses(df), wide=True), level=3))


def _nonfinite_body(table: pd.DataFrame) -> str:
    """The groups where some NaN or Inf landed elsewhere than the oracle's (a known
    divergence, or not passing) as a table; the groups where every one landed as the
    oracle's, in one line per family, so the differences are what the eye meets."""
    if table.empty:
        return "<p>No case held NaN or Inf.</p>"
    differs = (table["known divergence"] > 0) | (table["not passing"] > 0)
    agree = table[~differs]
    lines = "".join(
        f"<li>{html.escape(fam)}: " + ", ".join(
            f"{html.escape(layer)} ({len(g)} of {int((table['layer'] == layer).sum())} framework x dtype, "
            f"{int(g['non-finite results'].sum())} non-finite results)"
            for layer, g in part.groupby("layer", sort=False)) + "</li>"
        for fam, part in agree.groupby("family", sort=False))
    return (_table(table[differs], wide=True)
            + (f"<p>Every NaN and Inf landed where the oracle's did, with its value, in:</p><ul>{lines}</ul>"
               if lines else ""))


def _special_section(df: pd.DataFrame, notes: dict) -> str:
    declared = notes.get("special") or {}
    listed = "; ".join(f"{layer} ({', '.join(arrays)})" for layer, arrays in sorted(declared.items())) or "none"
    return (f"<p>Cases hold NaN, +Inf and -Inf at drawn positions of the inputs where a layer declares them "
            f"meaningful (one case in five, some of them instead with subnormals of the dtype or magnitudes near "
            f"sqrt(tiny), whose products are subnormal). The oracle's answer is the layer's formula in IEEE "
            f"arithmetic, reading only the cells of an element's own window, row or selected term; a check "
            f"passes only where every NaN and Inf comes out at the same position with the same value. Where the "
            f"math leaves a choice (the branch a NaN takes at a kink, the NaN a max-pool window routes to) each "
            f"framework's choice is a convention; anything else is a known divergence with what was measured. "
            f"Declared in this run: {html.escape(listed)}; validation rejects NaN and Inf in every other input, "
            f"parameter, label and cotangent. A subnormal exact value returned as 0 counts as flushed "
            f"(TensorFlow's CPU kernels flush subnormal inputs and results to zero).</p>"
            + _section("special-nonfinite", "NaN and Inf inputs: where the non-finite results land",
                       _nonfinite_body(nonfinite_table(df)), level=3)
            + _section("special-subnormal", "Subnormal inputs and results: what is flushed to zero, and what it does",
                       _table(subnormal_table(df), wide=True), level=3))


def _training_section(df: pd.DataFrame, notes: dict) -> str:
    training = notes.get("training") or {}
    steps = step_table(df[df["family"] == "training step"])
    if steps.empty and not training:
        return "<p>No training-step checks in this run.</p>"
    defaults = pd.DataFrame(training.get("defaults", []))
    gaps = pd.DataFrame(training.get("gaps", []))
    recorded = "" if training else "<p>This run recorded no defaults table (a report from before it existed).</p>"
    return ("<p>Clipping, optimizer trajectories (the parameters and the optimizer state after each step t, "
            "<code>w@t</code>, <code>m@t</code>, ...) and a whole training loop (<code>loss@t</code>, the gradients "
            "and parameters per step). Below: the worst error in units of its tolerance at each step (above 1 does "
            "not pass), then what a port gets when it keeps each framework's defaults, and how far each convention "
            "moves the parameters (max |w_torch - w_keras| / max |w|, float64, same gradients).</p>"
            + _section("training-steps", "Worst err / atol per step", _table(steps, wide=True), level=3)
            + _section("training-defaults", "What the defaults are (PyTorch against Keras)",
                       recorded or _table(defaults, wide=True), level=3)
            + _section("training-gaps", "How far apart each convention, and each framework's defaults, put the "
                       "parameters after step 1 and step 10", recorded or _table(gaps, wide=True), level=3))


def _plots_section(plots: dict) -> str:
    if not plots:
        return "<p>No check had a finite error to plot.</p>"
    figures = "".join(
        f'<figure id="plot-{html.escape(name)}"><img alt="{html.escape(caption)}" '
        f'src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}">'
        f"<figcaption>{html.escape(caption)} (also <code>plots/{html.escape(name)}.png</code>)</figcaption></figure>"
        if png else f'<figure id="plot-{html.escape(name)}"><figcaption>{html.escape(caption)}</figcaption></figure>'
        for name, (caption, png) in plots.items())
    return ("<p>Errors against tolerance: one row per layer; each dot is one check: its largest absolute error "
            "divided by the atol it had to meet, on a log scale, grouped by family (names at the right). Colours are "
            "frameworks, markers dtypes (legend above). The vertical line at 1 is the pass line: a dot right of it did "
            "not pass (ringed in black: a known divergence or a failure). A row whose dots sit far left has room to "
            "tighten its tolerance; a cloud close to the line is where a tolerance is tight. Errors that are NaN (an "
            "error raised, a check not applicable) are not drawn; an exact match is drawn at the left edge. Gradient "
            "flow through time (where a layer through time ran): the norm of the gradient reaching each step, the "
            "oracle's profile as a line and each framework's as markers.</p>" + figures)


def _family_anchor(family: str) -> str:
    return f"summary-{family.replace(' ', '-')}"


def _summary_section(grouped: pd.DataFrame) -> str:
    """The summary (``grouped``: by_family) as one table per family, under its own heading."""
    return "".join(_section(_family_anchor(fam), fam, _table(part.drop(columns="family"), wide=True), level=3)
                   for fam, part in grouped.groupby("family", sort=False)) or "<p>None.</p>"


def _not_passing_section(df: pd.DataFrame) -> str:
    """The checks that did not pass, grouped; then, folded, each of them."""
    bad = df[~df["status"].isin(["pass", "not_applicable"])].sort_values(["status", "err_eps"],
                                                                         ascending=[True, False])
    body = _table(not_passing_groups(bad), wide=True)
    if not bad.empty:
        body += (f"<details><summary>All {len(bad)} checks that did not pass, one per line</summary>"
                 f"{_table(checks(bad), wide=True)}</details>")
    return body


def _sections(df, summary, grouped, divergences, notes, worst, plots) -> list[tuple[str, str, str]]:
    """(anchor, caption, body) of every section, in the page's order."""
    families = layer_families(df)
    worst_pass = df[df["status"] == "pass"].nlargest(worst, "err_eps")
    return [
        ("glance", "At a glance", at_a_glance(summary, families)),
        ("plots", "Plots: errors against tolerance, gradient flow through time", _plots_section(plots)),
        ("summary", "Summary: layer x framework x dtype, by family", _summary_section(grouped)),
        ("precision", "Precision: each element against itself, in ulps", _precision_section(df, notes)),
        ("special", "Special values: NaN, Inf and subnormal inputs", _special_section(df, notes)),
        ("training", "Training step: errors per step, and what the defaults change", _training_section(df, notes)),
        ("conventions", "Conventions: what each framework does where the math leaves a choice",
         _table(convention_table(df, notes), wide=True)),
        ("divergences", "Known divergences (reason and measured behaviour, as recorded by the run)",
         _table(divergences, wide=True)),
        ("not-applicable", "Checks that were not applicable (not run, not passed)",
         _table(by_family(not_applicable_table(df), families, "framework", "dtype"), wide=True)),
        ("not-passing", "Every check that did not pass, grouped by layer and divergence (with its reproduction)",
         _not_passing_section(df)),
        ("worst-passing", f"The {worst} largest errors that passed", _table(checks(worst_pass, False), wide=True)),
    ]


def _contents(sections, families: list[str]) -> str:
    """The table of contents: every section, and under the summary every family."""
    items = "".join(f'<li><a href="#{html.escape(_family_anchor(fam))}">{html.escape(fam)}</a></li>'
                    for fam in families)
    under = {"summary": f"<ol>{items}</ol>"} if families else {}
    return "".join(f'<li><a href="#{anchor}">{html.escape(caption)}</a>{under.get(anchor, "")}</li>'
                   for anchor, caption, _ in sections)


def page(df: pd.DataFrame, summary: pd.DataFrame, divergences: pd.DataFrame, notes: dict, run: dict, worst: int,
         plots: dict | None = None) -> str:
    """report.html from the rows (files.frame), their summary and divergence table (tables.py), the notes and
    run as write_report takes them, the ``worst`` passing checks to list, and the plots (plots.render_plots)."""
    grouped = by_family(summary, layer_families(df), "framework", "dtype")
    sections = _sections(df, summary, grouped, divergences, notes, worst, plots or {})
    body = "\n".join(_section(anchor, caption, content) for anchor, caption, content in sections)
    versions = ", ".join(f"{fw} {v}" for fw, v in df.groupby("framework")["framework_version"].last().items())
    references = ", ".join(sorted(set(df["reference"]))) or "none"
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    partial = " (partial)" if run["partial"] else ""
    toc = _contents(sections, list(dict.fromkeys(grouped["family"])))
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>gradparity report{partial}</title>
<style>{STYLE}</style></head><body>
<h1>gradparity: gradients against a reference{partial}</h1>
{_partial_banner(run)}
<p>{len(df)} checks over {df['case'].nunique()} cases; compared with: {html.escape(references)};
{html.escape(versions or 'no framework ran')}; {stamp}.</p>
<p>Each check compares a framework's output or gradient with its reference, normally the NumPy oracle evaluated in
float64 on the same (rounded) numbers. It passes when
<code>max |framework - reference| &le; atol = rtol &times; condition &times; scale</code>, with
<code>scale = max(max|reference tensor|, floor)</code>, the floor being max|cotangent| for a gradient and the largest
input magnitude for an output; <code>err_eps</code> is the error in units of the dtype's eps relative to that scale,
<code>err/atol</code> the error in units of the tolerance (above 1 does not pass).
Statuses: {', '.join(STATUSES)}. A group's verdict is one of: {', '.join(VERDICTS)};
"{PARTLY_NA}" means every check that could run passed but some were not applicable (the grid shows checked/checks).
Click a column heading to sort a table.</p>
<nav class="toc" id="contents"><strong>Contents</strong><ol>{toc}</ol></nav>
{body}
<script>{SORT_SCRIPT}</script>
</body></html>"""
