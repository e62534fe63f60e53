"""The report page: report.html as one string (``page``), self-contained (plots inline, no external resource,
one inline script that sorts a table on a click on a heading), every string from the data escaped; and the
style sheet, script and verdict colours that drift.html shares.

The page opens with a table of contents, then shows the verdicts, colour-coded (a legend says what each colour
means), layers grouped by family, the plots, the summary, what each group's cases covered against the run's plan,
precision, special values and training steps, the conventions and known divergences as the run recorded them (and
which of them explained nothing here), the checks that were not applicable, the checks that did not pass grouped
by layer and divergence (with its reproduction), and the worst passing ones. Every check that did not pass, one per
line, is on a page of its own (``checks_page``: checks.html), so that report.html stays quick to open.
"""

from __future__ import annotations

import base64
import html
from datetime import datetime, timezone

import pandas as pd
from pandas.io.formats.style import Styler

from .coverage import coverage_table
from .rows import STATUSES
from .plots import MODEL_PLOTS
from .tables import (JUDGED, PARTLY_NA, STALE, VERDICTS, by_family, checks, convention_table, keeps_and_loses,
                     layer_families, model_table, modes_table, nonfinite_table, not_applicable_table,
                     not_passing_groups, precision_table, step_table, subnormal_table)

# Headings wrap only between words (never "framewor k"; _heading lets a name part after an underscore);
# long cells without spaces (td.long) may break anywhere.
STYLE = """body{font-family:system-ui,sans-serif;margin:1.5em;max-width:110em}
table.grid{border-collapse:collapse;font-size:13px;margin-bottom:1em}
table.grid td,table.grid th{border:1px solid #ccc;padding:3px 6px;vertical-align:top}
table.grid th{background:#f4f4f4}
table.wide{width:100%}
table.wide td{overflow-wrap:break-word;max-width:36em}
table.grid th{overflow-wrap:normal;word-break:normal;hyphens:none}
table.wide td.long{overflow-wrap:anywhere;min-width:6em}
.legend{font-size:13px;line-height:2} .swatch{border:1px solid #bbb;padding:1px 6px;margin-right:.3em}
.unreached{color:#b00000;font-weight:600} td.short{background-color:#f6c6c6}
ol.reasons{font-size:12px;max-width:90em;color:#333} ol.reasons li:target{background:#fff3c4}
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

CANNOT_RUN = "cannot run"  # a group whose framework (in its mode) can express no case of the layer

# In the grid, a pass where fewer than half the checks could run: not the pass green (it tested little).
MOSTLY_NA = "#d6dbe9"

STATUS_COLUMNS = ("status", "verdict")
LONG_COLUMNS = ("detail", "reproduce", "attrs", "reason", "measured", "names", "divergence", "convention",
                "bound", "changes", "behind", "where", "lost", "example")


def _heading(name) -> str:
    """A column heading, escaped; it may wrap after an underscore (between the words of a name such as
    known_divergence), never inside a word, so that a table of many such columns still fits the page."""
    return html.escape(str(name)).replace("_", "_<wbr>")


def _table(df: pd.DataFrame, *, wide: bool = False, sortable: bool = True, flag: dict | None = None) -> str:
    """A table, every cell HTML-escaped, status and verdict columns colour-coded;
    ``wide`` tables take the page's width and wrap long cells; a ``sortable``
    one sorts on a click on a column heading (the page's inline script);
    ``flag``: column -> the colour of its cells that are not empty."""
    if df.empty:
        return "<p>None.</p>"
    fmt = {c: "{:.3g}" for c in df.columns if df[c].dtype.kind == "f"}
    classes = "grid" + (" wide" if wide else "") + (" sortable" if sortable else "")
    # cell_ids=False: only the cells with a style of their own carry an id, which keeps large tables small
    styler = (Styler(df, cell_ids=False).hide(axis="index").format(fmt, na_rep="", escape="html")
              .format_index(_heading, axis=1).set_table_attributes(f'class="{classes}"'))
    long = [c for c in df.columns if str(c).split(" ")[0] in LONG_COLUMNS]
    if long:  # long text without spaces may break anywhere; a short word never does
        styler = styler.set_td_classes(pd.DataFrame("long", index=df.index, columns=long))
    for col in [c for c in df.columns if c in STATUS_COLUMNS or str(c).endswith(" verdict")]:
        styler = styler.map(lambda v: f"background-color: {COLOURS.get(v, '')}", subset=[col])
    for col, colour in (flag or {}).items():
        styler = styler.map(lambda v, c=colour: f"background-color: {c}" if v else "", subset=[col])
    return styler.to_html()


def _html_table(head: list[str], rows: list[list[tuple[str, str]]]) -> str:
    """A wide sortable table of cells already made HTML (each ``(html, td class)``): for cells that hold
    markup of their own (links, red words), which the escaping ``_table`` cannot carry."""
    th = "".join(f"<th>{_heading(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f'<td class="{cls}">{cell}</td>' if cls else f"<td>{cell}</td>"
                                    for cell, cls in r) + "</tr>" for r in rows)
    return f'<table class="grid wide sortable"><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>\n'


def _section(anchor: str, caption: str, body: str, level: int = 2) -> str:
    """A heading with its anchor, then ``body``."""
    return f'<h{level} id="{html.escape(anchor)}">{html.escape(caption)}</h{level}>\n{body}'


def glance_label(s) -> str:
    """The verdict, plus how many checks ran when only some could ("pass, 16 of 78 ran")."""
    if s.checked in (0, s.checks):
        return s.verdict
    return f"{'pass' if s.verdict == PARTLY_NA else s.verdict}, {s.checked} of {s.checks} ran"


def glance_colour(s) -> str:
    """The verdict's colour; a pass where fewer than half the checks could run gets MOSTLY_NA instead, so that
    it does not read as a pass at a glance (the plain pass green is for groups where every check ran)."""
    if s.verdict == PARTLY_NA and 2 * s.checked < s.checks:
        return MOSTLY_NA
    return COLOURS.get(s.verdict, "")


# The grid's legend: (a cell as it reads, its colour, what it means).
GLANCE_LEGEND = (
    ("pass", COLOURS["pass"], "every check ran and passed"),
    ("pass, 70 of 77 ran", COLOURS[PARTLY_NA], "every check that could run passed; a few were not applicable"),
    ("pass, 3 of 68 ran", MOSTLY_NA, "every check that could run passed, but most could not run: little was tested"),
    ("known_divergence", COLOURS["known_divergence"], "some checks differ in a recorded way (see Known divergences)"),
    ("fail", COLOURS["fail"], "some check failed, or the framework raised"),
    ("not_applicable", COLOURS["not_applicable"], "no check could run"),
    (CANNOT_RUN, COLOURS["not_applicable"], "the framework, in this mode, can express no case of the layer "
                                            "(the coverage section says why)"),
)


def _glance_legend() -> str:
    return '<p class="legend">' + "; ".join(
        f'<span class="swatch" style="background-color:{colour}">{html.escape(label)}</span>{html.escape(text)}'
        for label, colour, text in GLANCE_LEGEND) + ".</p>"


def at_a_glance(summary: pd.DataFrame, families: dict, census: list | None = None) -> str:
    """A legend, then one line per layer (grouped by family; ``families``: layer -> family), one column per
    framework x dtype: the verdict, colour-coded, with how many checks ran where only some could. A group
    of the run's ``census`` that planned no case (its framework cannot express the layer in that mode)
    reads ``CANNOT_RUN`` rather than a blank."""
    if summary.empty:
        return "<p>No checks ran.</p>"
    cells = by_family(summary, families).assign(
        label=lambda t: t.apply(glance_label, axis=1),
        colour=lambda t: t.apply(lambda s: f"background-color: {glance_colour(s)}", axis=1))
    ran = set(zip(cells["layer"], cells["framework"], cells["dtype"]))
    refused = [{"family": families.get(c["layer"], ""), "layer": c["layer"], "framework": c["framework"],
                "dtype": c["dtype"], "label": CANNOT_RUN, "colour": f"background-color: {COLOURS['not_applicable']}"}
               for c in census or () if not c.get("planned") and (c["layer"], c["framework"], c["dtype"]) not in ran
               and c["layer"] in families]
    cells = pd.concat([cells, pd.DataFrame(refused)], ignore_index=True) if refused else cells
    order = list(dict.fromkeys(zip(cells["family"], cells["layer"])))
    labels = cells.pivot(index=["family", "layer"], columns=["framework", "dtype"], values="label")
    colours = cells.pivot(index=["family", "layer"], columns=["framework", "dtype"], values="colour")
    labels, colours = labels.reindex(order).fillna(""), colours.reindex(order).fillna("")
    return _glance_legend() + (labels.style.apply(lambda _: colours, axis=None)
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


def _figures(plots: dict) -> str:
    return "".join(
        f'<figure id="plot-{html.escape(name)}"><img alt="{html.escape(caption)}" '
        f'src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}">'
        f"<figcaption>{html.escape(caption)} (also <code>plots/{html.escape(name)}.png</code>)</figcaption></figure>"
        if png else f'<figure id="plot-{html.escape(name)}"><figcaption>{html.escape(caption)}</figcaption></figure>'
        for name, (caption, png) in plots.items())


def _models_section(df: pd.DataFrame, plots: dict) -> str:
    table = model_table(df)
    if table.empty:
        return "<p>No whole model ran.</p>"
    return ("<p>Whole models (<code>model_*</code>): each is one forward and one backward through the framework's "
            "own network, compared with the oracle at every layer boundary: each layer's output (kind "
            "<code>out</code>), the gradient arriving there (<code>cot</code>) and every parameter's gradient, named "
            "<code>3:dense.W</code> after the step. Where a case did not pass, the oracle recomputes every layer "
            "from the framework's own inputs and cotangents, and <b>first divergence</b> names the first layer that "
            "computes differently, forward or backward. A known divergence of that layer, asked about that layer "
            "alone, explains the model's rows only if it explains every layer that diverges. The last column is the "
            "gradient's health in the deepest case: the norm arriving at the first layer over the norm arriving at "
            "the last one (far below 1: it vanishes on the way back).</p>"
            + _table(table, wide=True) + _figures({n: plots[n] for n in MODEL_PLOTS if n in plots}))


def _modes_section(df: pd.DataFrame) -> str:
    table = modes_table(df)
    if table.empty:
        return "<p>Every check ran eagerly (<code>--modes</code> adds torch.compile, tf.function and XLA).</p>"
    return ("<p>The same layers under compiled execution: <code>torch.compile</code> (aot_eager: <code>compile</code>; "
            "Inductor: <code>inductor</code>), <code>tf.function</code> (<code>function</code>) and XLA "
            "(<code>xla</code>). Each is checked against the oracle like eager code; <b>vs_eager_eps</b> is how far "
            "its result is from the same framework's eager one, in eps of the scale: a measure, not a verdict "
            "(bitwise equality is not expected of a compiled graph).</p>" + _table(table, wide=True))


def _plots_section(plots: dict) -> str:
    plots = {n: p for n, p in plots.items() if n not in MODEL_PLOTS}
    if not plots:
        return "<p>No check had a finite error to plot.</p>"
    figures = _figures(plots)
    return ("<p>Errors against tolerance: one row per layer; each dot is one check: its largest absolute error "
            "divided by the atol it had to meet, on a log scale, grouped by family (names at the right). Colours are "
            "frameworks, markers dtypes (legend above). The vertical line at 1 is the pass line: a dot right of it did "
            "not pass on its error (ringed in black: a known divergence or a failure). A dot ringed in orange did not "
            "pass although its error is within atol, so it sits left of the line: NaN or Inf landed elsewhere than "
            "the oracle's while every finite position passed (a known divergence, or a failure, of positions only), "
            "or, under --strict-precision, an element lost digits. A row "
            "whose dots sit far left has room to tighten its tolerance; a cloud close to the line is where a "
            "tolerance is tight. Errors that are NaN (an error raised, a check not applicable) are not drawn; an "
            "exact match is drawn at the left edge. Gradient flow through time (where a layer through time ran): the "
            "norm of the gradient reaching each step for one case per layer and dtype that every framework ran "
            "(the legend says where a framework's own case stands in), the oracle's profile as a line and each "
            "framework's as markers. Values below the dtype's resolution (the profile's largest value times the "
            "dtype's eps) carry no information: they are drawn at that floor (dashed), the framework's as x, so "
            "that the plot shows no difference the verdict does not.</p>" + figures)


def _family_anchor(family: str, section: str = "summary") -> str:
    return f"{section}-{family.replace(' ', '-')}"


def _summary_section(grouped: pd.DataFrame) -> str:
    """The summary (``grouped``: by_family) as one table per family, under its own heading."""
    return "".join(_section(_family_anchor(fam), fam, _table(part.drop(columns="family"), wide=True), level=3)
                   for fam, part in grouped.groupby("family", sort=False)) or "<p>None.</p>"


COVERAGE_HEAD = ["layer", "framework", "dtype", "cases ran", "configurations", "edges reached (cases)",
                 "edges it cannot run [reason]", "configurations it cannot express ([reason] draws)", "shortfall"]


def _edges_reached(text: str) -> str:
    """coverage_table's "edge n, edge n" with each edge no case reached in red."""
    out = []
    for item in filter(None, text.split(", ")):
        name, _, n = item.rpartition(" ")
        cell = f"{html.escape(name)}&nbsp;{html.escape(n)}"
        out.append(f'<span class="unreached">{cell}</span>' if n == "0" else cell)
    return ", ".join(out)


def _coverage_family(family: str, part: pd.DataFrame, census: dict) -> str:
    """One family's coverage table; the reasons (long, repeated across groups) numbered once under it."""
    anchor = _family_anchor(family, "coverage")
    reasons: dict[str, int] = {}

    def ref(why: str) -> str:
        n = reasons.setdefault(why, len(reasons) + 1)
        return f'<a href="#{html.escape(anchor)}-{n}">[{n}]</a>'

    rows = []
    for r in part.to_dict("records"):
        entry = census.get((r["layer"], r["framework"], r["dtype"]), {})
        cannot = ", ".join(f"{html.escape(e)}&nbsp;{ref(why)}" for e, why in entry.get("edges", {}).items() if why)
        refused = sorted(entry.get("refused", {}).items(), key=lambda kv: -kv[1])
        rows.append([(html.escape(str(r[k])), "") for k in ("layer", "framework", "dtype", "cases", "configurations")]
                    + [(_edges_reached(r["edges reached (cases)"]), ""), (cannot, ""),
                       (", ".join(f"{ref(why)}&nbsp;{n}" for why, n in refused), ""),
                       # red only for a real shortfall, not for "no census" of a group outside the plans
                       (html.escape(r["shortfall"]), "short" if r["shortfall"] and entry else "")])
    notes = "".join(f'<li id="{html.escape(anchor)}-{n}">{html.escape(why)}</li>' for why, n in reasons.items())
    return _section(anchor, family, _html_table(COVERAGE_HEAD, rows)
                    + (f'<ol class="reasons">{notes}</ol>' if notes else ""), level=3)


def _coverage_section(df: pd.DataFrame, notes: dict, families: dict) -> str:
    """Per family, what each layer x framework x dtype really covered (coverage.coverage_table, from the rows and
    the run's census) and what falls short of the profile's floors; one line for a report with no census."""
    census = notes.get("census") or []
    if not census:
        return "<p>This run recorded no census (a report from before the plans): what its cases covered is unknown.</p>"
    floors = notes.get("floors")
    table = by_family(coverage_table(df, census, floors).drop(columns="family"), families, "framework", "dtype")
    by_group = {(c["layer"], c["framework"], c["dtype"]): c for c in census}
    planned = [(r.layer, r.framework, r.dtype) in by_group for r in table.itertuples()]
    short = [f"{r.layer} {r.framework} {r.dtype}" for r, p in zip(table.itertuples(), planned) if p and r.shortfall]
    unplanned = (f" {planned.count(False)} group(s) have no census entry (their shortfall cell says so)."
                 if not all(planned) else "")
    wanted = (f"{floors['cases']} cases and {floors['configurations']} distinct configurations per group (or every "
              f"configuration its plan could find, where there are fewer), and every runnable edge reached"
              if floors else "none recorded, so no shortfall is judged")
    return (f"<p>Per layer x framework x dtype: the cases that really ran (a comparison was made: pass, fail or known "
            f"divergence), the distinct configurations among them (attributes and shapes), each edge the framework "
            f"can run with the number of cases reaching it (in red: no case reached it), the edges it cannot run, "
            f"the configurations it refused when the plan drew them (how many draws, by reason), and what falls "
            f"short of the floors of the profile ({html.escape(str(notes.get('profile') or 'not recorded'))}): "
            f"{html.escape(wanted)}. Reasons are numbered under each family's table. "
            + (f"<strong>{len(short)} of {sum(planned)} groups fall short</strong>: {html.escape(', '.join(short))}."
               if short else f"Every one of the {sum(planned)} groups with a census entry meets the floors.")
            + unplanned + "</p>"
            + "".join(_coverage_family(fam, part, by_group) for fam, part in table.groupby("family", sort=False)))


def _divergences_section(divergences: pd.DataFrame) -> str:
    """The known divergences, those that explained nothing here (STALE) named first and flagged in their row."""
    stale = divergences[divergences[STALE] != ""] if STALE in divergences else divergences.iloc[:0]
    lead = (f"<p><strong>{len(stale)} known divergence(s) may no longer hold</strong>: the condition of each held "
            f"in some case of this run, but every check passed (last column): "
            f"{html.escape(', '.join(stale['divergence']))}.</p>" if len(stale) else "")
    return lead + _table(divergences, wide=True, flag={STALE: COLOURS["known_divergence"]} if len(stale) else None)


def _not_passing(df: pd.DataFrame) -> pd.DataFrame:
    """The checks that did not pass (not_applicable ones were not made), worst first within each status."""
    return df[~df["status"].isin(["pass", "not_applicable"])].sort_values(["status", "err_eps"],
                                                                           ascending=[True, False])


def _not_passing_section(df: pd.DataFrame) -> str:
    """The checks that did not pass, grouped; each of them is on checks.html (checks_page), linked."""
    bad = _not_passing(df)
    # thousands of lines would make this page slow to open: they have a page of their own
    link = (f'<p>All {len(bad)} checks that did not pass, one per line with its reproduction, are on '
            f'<a href="checks.html">checks.html</a> (beside this page).</p>' if len(bad) else "")
    return link + _table(not_passing_groups(bad), wide=True)


def _sections(df, summary, grouped, divergences, notes, worst, plots) -> list[tuple[str, str, str]]:
    """(anchor, caption, body) of every section, in the page's order."""
    families = layer_families(df)
    worst_pass = df[df["status"] == "pass"].nlargest(worst, "err_eps")
    return [
        ("glance", "At a glance", at_a_glance(summary, families, notes.get("census"))),
        ("plots", "Plots: errors against tolerance, gradient flow through time", _plots_section(plots)),
        ("summary", "Summary: layer x framework x dtype, by family", _summary_section(grouped)),
        ("coverage", "Coverage: what each group's cases reached, against the run's plan",
         _coverage_section(df, notes, families)),
        ("precision", "Precision: each element against itself, in ulps", _precision_section(df, notes)),
        ("special", "Special values: NaN, Inf and subnormal inputs", _special_section(df, notes)),
        ("training", "Training step: errors per step, and what the defaults change", _training_section(df, notes)),
        ("models", "Whole models: the first divergent layer, and gradient health through depth",
         _models_section(df, plots)),
        ("modes", "Execution modes: compiled against the oracle, and against eager", _modes_section(df)),
        ("conventions", "Conventions: what each framework does where the math leaves a choice",
         _table(convention_table(df, notes), wide=True)),
        ("divergences", "Known divergences (reason and measured behaviour, as recorded by the run)",
         _divergences_section(divergences)),
        ("not-applicable", "Checks that were not applicable (not run, not passed)",
         _table(by_family(not_applicable_table(df), families, "framework", "dtype"), wide=True)),
        ("not-passing", "Every check that did not pass, grouped by layer and divergence (with its reproduction)",
         _not_passing_section(df)),
        ("worst-passing", f"The {worst} largest errors that passed", _table(checks(worst_pass, False), wide=True)),
    ]


def _contents(sections, families: list[str], census: bool) -> str:
    """The table of contents: every section, and under the summary (and the coverage, when the run recorded its
    census) every family."""
    def items(section: str) -> str:
        return "<ol>" + "".join(f'<li><a href="#{html.escape(_family_anchor(fam, section))}">{html.escape(fam)}</a>'
                                f"</li>" for fam in families) + "</ol>"
    under = {s: items(s) for s in ("summary", "coverage") if families and (census or s == "summary")}
    return "".join(f'<li><a href="#{anchor}">{html.escape(caption)}</a>{under.get(anchor, "")}</li>'
                   for anchor, caption, _ in sections)


def _document(title: str, body: str) -> str:
    """A self-contained page: the style sheet, ``body``, the sorting script; nothing fetched."""
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{STYLE}</style></head><body>
{body}
<script>{SORT_SCRIPT}</script>
</body></html>"""


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
    toc = _contents(sections, list(dict.fromkeys(grouped["family"])), bool(notes.get("census")))
    return _document(f"gradparity report{partial}", f"""<h1>gradparity: gradients against a reference{partial}</h1>
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
"{PARTLY_NA}" means every check that could run passed but some were not applicable (the grid says how many ran, and
its legend what each colour means). Click a column heading to sort a table.</p>
<nav class="toc" id="contents"><strong>Contents</strong><ol>{toc}</ol></nav>
{body}""")


def checks_page(df: pd.DataFrame, run: dict) -> str:
    """checks.html: every check that did not pass, one per line (tables.checks, with its reproduction), worst first
    within each status, sortable, in the report's style; report.html links to it instead of holding the list."""
    bad = _not_passing(df)
    partial = " (partial)" if (run or {}).get("partial") else ""
    return _document(f"gradparity: checks that did not pass{partial}", f"""<h1>gradparity: every check that did not \
pass{partial}</h1>
<p>{len(bad)} checks did not pass, one per line, worst first within each status; <code>err/atol</code> above 1 did not
pass on its error; at or below 1, on where NaN or Inf land (or, under --strict-precision, on digits lost); empty, the
framework raised. The report groups them by layer and divergence:
<a href="report.html#not-passing">report.html</a>. Click a column heading to sort.</p>
{_table(checks(bad), wide=True)}""")
