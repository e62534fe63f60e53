"""Rows -> gradients.csv, summary.csv, meta.json, report.html.

``gradients.csv`` has one row per ROW_KEY (case x framework x reference x
compared name); ``summary.csv`` one row per layer x framework x dtype;
``meta.json`` what the run recorded about the frameworks (``notes``) and
whether it finished (``run``); ``plots/*.png`` the plots (see plots.py);
``report.html`` (one self-contained file: plots inline, no external resource)
opens with a table of contents, then shows the verdicts, colour-coded, layers
grouped by family (``FAMILIES``), the plots, the conventions and known
divergences as the run recorded them, the checks that were not applicable,
every check that did not pass grouped by layer and divergence (with its
reproduction), and the worst passing ones. Tables sort on a click on a heading.

The report reads only rows, notes and run: never the current adapters or
tolerance tables, so an old or merged report shows its own reasons.
Every file is replaced atomically, every string from the data is escaped in
the HTML, and CSV text cells that a spreadsheet would run as a formula are
neutralized (and restored exactly by ``read_rows``).
"""

from __future__ import annotations

import base64
import html
import json
import os
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from .plots import render_plots
from .rows import COLUMNS, GROUP_KEY, NUMERIC, ROW_KEY, STATUSES, step_of

PARTLY_NA = "pass (partly n/a)"
# A group's verdict, worst first: any fail or error; any known divergence; nothing
# could be checked; everything checked passed but some checks were not applicable;
# every check ran and passed.
VERDICTS = ("fail", "known_divergence", "not_applicable", PARTLY_NA, "pass")
COLOURS = {"pass": "#c8ecc8", PARTLY_NA: "#ecf7e4", "fail": "#f6c6c6", "error": "#f0b0d8",
           "known_divergence": "#fbe3b4", "not_applicable": "#e4e4e4"}
SUMMARY_COLUMNS = GROUP_KEY + ["verdict", "cases", "checks", "checked", *STATUSES, "worst_rel_err", "worst_err_eps",
                               "rtol", "max_condition", "convention", "framework_version"]
# The report groups layers by family: the one place that says which family a layer
# is in. A layer not named here (a user's own) goes to "other".
FAMILY_ORDER = ("dense", "activations", "losses", "convolution", "pooling", "normalization", "embedding", "dropout",
                "recurrent", "attention", "training step", "other")
FAMILIES = {
    "dense": ("dense", "residual_block"),
    "activations": ("relu", "leaky_relu", "elu", "selu", "gelu", "silu", "sigmoid", "tanh", "softplus", "softmax",
                    "log_softmax", "hardtanh", "softsign", "swish", "mish"),
    "losses": ("mse", "l1", "huber", "cross_entropy", "binary_cross_entropy_with_logits", "nll", "kl_div"),
    "convolution": ("conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "depthwise_conv2d"),
    "pooling": ("max_pool1d", "max_pool2d", "avg_pool1d", "avg_pool2d", "global_avg_pool2d", "global_max_pool2d",
                "adaptive_avg_pool2d"),
    "normalization": ("batch_norm", "batch_norm_inference", "layer_norm", "group_norm", "instance_norm", "rms_norm"),
    "embedding": ("embedding",),
    "dropout": ("dropout",),
    "recurrent": ("rnn", "lstm", "gru", "stacked_lstm", "stacked_gru", "bidirectional_lstm", "bidirectional_gru",
                  "masked_rnn", "masked_lstm", "masked_gru", "masked_bidirectional_lstm", "masked_bidirectional_gru"),
    "attention": ("attention", "multi_head_attention", "multi_head_attention_weights", "scaled_dot_product_attention"),
    "training step": ("clip_by_value", "clip_by_norm", "clip_by_global_norm", "sgd_step", "momentum_step",
                      "adam_step", "adamw_step", "rmsprop_step", "adagrad_step", "train_step"),
}
LAYER_FAMILY = {layer: fam for fam, layers in FAMILIES.items() for layer in layers}


def family(layer: str) -> str:
    """The family a layer is shown under in the report ("other" for a layer not in FAMILIES)."""
    return LAYER_FAMILY.get(layer, "other")


def _by_family(df: pd.DataFrame, *more) -> pd.DataFrame:
    """``df`` with a leading ``family`` column, sorted by family (in FAMILY_ORDER), then layer, then ``more``."""
    out = df.copy()
    out.insert(0, "family", out["layer"].map(family))
    rank = out["family"].map(FAMILY_ORDER.index)
    return (out.assign(_rank=rank).sort_values(["_rank", "layer", *more], kind="stable")
            .drop(columns="_rank").reset_index(drop=True))


# A spreadsheet runs a cell starting with one of these as a formula; "'" is
# prefixed too so that read_rows can strip exactly one "'" from every such cell.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "'")


class ReportError(Exception):
    """An input that is not a readable report directory (merge, drift)."""


def report_dirs(inputs) -> list[Path]:
    """The inputs as paths, each a directory holding gradients.csv; else ReportError naming every bad one."""
    inputs = [Path(d) for d in inputs]
    bad = [f"{d} (no such directory)" if not d.is_dir() else f"{d} (no gradients.csv)"
           for d in inputs if not (d / "gradients.csv").is_file()]
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
    """One line per layer (grouped by family), one column per framework x dtype: the verdict, colour-coded."""
    if summary.empty:
        return "<p>No checks ran.</p>"
    cells = _by_family(summary).assign(
        label=lambda t: t.apply(glance_label, axis=1),
        colour=lambda t: t["verdict"].map(lambda v: f"background-color: {COLOURS.get(v, '')}"))
    order = list(dict.fromkeys(zip(cells["family"], cells["layer"])))
    labels = cells.pivot(index=["family", "layer"], columns=["framework", "dtype"], values="label")
    colours = cells.pivot(index=["family", "layer"], columns=["framework", "dtype"], values="colour")
    labels, colours = labels.reindex(order).fillna(""), colours.reindex(order).fillna("")
    return (labels.style.apply(lambda _: colours, axis=None)
            .format(escape="html").format_index(escape="html", axis=0).format_index(escape="html", axis=1)
            .set_table_attributes('class="grid glance"').to_html())


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
    return f'<h{level} id="{html.escape(anchor)}">{html.escape(caption)}</h{level}>\n{body}'


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


def _write_atomically(path: Path, text: str | bytes) -> None:
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


def _partial_banner(run: dict) -> str:
    if not run["partial"]:
        return ""
    missing = [str(m) for m in run["missing"]]
    shown = ", ".join(m if len(m) <= 120 else m[:117] + "..." for m in missing[:10])
    more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
    return (f'<p class="partial"><strong>partial</strong>: {html.escape(run["why"] or "the run did not finish")}.'
            f' Did not run: {html.escape(shown + more) if missing else "unknown"}.</p>')


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

# The columns a reader needs first, then the rest.
CHECK_COLUMNS = ["layer", "framework", "dtype", "kind", "name", "status", "err/atol", "max_abs_err", "atol",
                 "rtol", "err_eps", "detail", "reproduce", "divergence", "condition", "max_rel_err", "shape",
                 "reference", "attrs"]


def _checks(df: pd.DataFrame, reproduce: bool = True) -> pd.DataFrame:
    out = df.assign(**{"err/atol": df["max_abs_err"] / df["atol"].where(df["atol"] > 0)})
    return out[[c for c in CHECK_COLUMNS if reproduce or c != "reproduce"]]


def not_passing_groups(bad: pd.DataFrame) -> pd.DataFrame:
    """The checks that did not pass, one line per layer x framework x dtype x status x divergence:
    how many checks and cases, which names, the worst error and the detail and reproduction of the worst."""
    cols = ["family", "layer", "framework", "dtype", "status", "divergence", "checks", "cases", "names",
            "worst err/atol", "worst err_eps", "detail (worst)", "reproduce (worst)"]
    if bad.empty:
        return pd.DataFrame(columns=cols)
    keys = ["layer", "framework", "dtype", "status", "divergence"]
    ranked = bad.assign(_r=(bad["max_abs_err"] / bad["atol"].where(bad["atol"] > 0)).fillna(np.inf))
    ranked = ranked.sort_values("_r", ascending=False, kind="stable")
    groups = ranked.groupby(keys, sort=False).agg(
        checks=("status", "size"), cases=("case", "nunique"),
        names=("name", lambda v: ", ".join(sorted(set(v)))),
        worst=("_r", "first"), worst_eps=("err_eps", "max"),
        detail=("detail", "first"), reproduce=("reproduce", "first")).reset_index()
    groups["worst"] = groups["worst"].replace(np.inf, np.nan)
    groups = groups.rename(columns={"worst": "worst err/atol", "worst_eps": "worst err_eps",
                                    "detail": "detail (worst)", "reproduce": "reproduce (worst)"})
    return _by_family(groups, "framework", "dtype", "status")[cols]


# ---- precision: each element against itself, in ulps (columns max_ulp_err ... ulp_lost)

JUDGED = ("ok", "lost")


def _merged_runs(texts) -> tuple[str | None, list[dict]]:
    """The lost elements of several rows' ``ulp_lost`` (JSON) as ranges of the input:
    consecutive lost inputs with no kept input between them (from any of the rows)
    form one range, with the nearest kept inputs on either side."""
    lost, kept, name, n = [], set(), None, 0
    for text in texts:
        if not text:
            continue
        d = json.loads(text)
        name = name or d.get("input")
        n += d.get("n", len(d["lost"]))
        lost += d["lost"]
        kept.update(d["kept"])
    if not lost:
        return name, []
    if name is None or any(p[0] is None for p in lost):  # a tensor with no input of its shape (a loss)
        return None, [{"n": n, "worst": max(p[1] for p in lost)}]
    events = sorted([(x, 0, None) for x in kept] + [(p[0], 1, p) for p in lost], key=lambda e: (e[0], e[1]))
    runs, current, last_kept = [], None, None
    for x, is_lost, p in events:
        if not is_lost:
            if current is not None:
                current["kept_above"] = x
                runs.append(current)
                current = None
            last_kept = x
            continue
        if current is None:
            current = {"from": x, "to": x, "n": 0, "worst": 0.0, "returns": set(), "kept_below": last_kept,
                       "kept_above": None, "zeros": []}
        current.update(to=x, n=current["n"] + 1, worst=max(current["worst"], p[1]))
        current["returns"].add(p[2])
        if p[2] == 0:
            current["zeros"].append(x)
    if current is not None:
        runs.append(current)
    for r in runs:
        r["returns"] = next(iter(r["returns"])) if len(r["returns"]) == 1 else None
    return name, runs


def _zeros(name: str, run: dict) -> str:
    """Where, inside a range that is not all 0, the answer was exactly 0 (a tail flushed to 0)."""
    zeros = run.get("zeros") or []
    if not zeros or run["returns"] is not None:
        return ""
    lo, hi = min(zeros), max(zeros)
    span = f"{name} = {lo:.6g}" if lo == hi else f"{name} in [{lo:.6g}, {hi:.6g}]"
    return f", exactly 0 at {span} ({len(zeros)} of them)"


def _describe_runs(label: str, name: str | None, runs: list[dict], limit: int = 4) -> str:
    if name is None:
        r = runs[0]
        return f"{label}: {r['n']} element(s) lost digits, up to {r['worst']:.3g} ulps"
    parts = []
    for r in sorted(runs, key=lambda r: -r["worst"])[:limit]:
        span = (f"{name} = {r['from']:.6g}" if r["from"] == r["to"] else f"{name} in [{r['from']:.6g}, {r['to']:.6g}]")
        kept = [f"{v:.6g}" for v in (r["kept_below"], r["kept_above"]) if v is not None]
        parts.append(f"{span}: {r['n']} element(s)" + (f" return {r['returns']:.9g}" if r["returns"] is not None else "")
                     + f", up to {r['worst']:.3g} ulps" + _zeros(name, r)
                     + (f" (digits kept at {name} = {' and '.join(kept)})" if kept else ""))
    more = f"; and {len(runs) - limit} more range(s)" if len(runs) > limit else ""
    return f"{label}: " + "; ".join(parts) + more


def precision_table(df: pd.DataFrame) -> pd.DataFrame:
    """Per layer x framework x dtype: the worst ulp error and where, which oracle
    measured it, how many checks lost digits, and the input ranges where they did."""
    cols = ["family", "layer", "framework", "dtype", "worst ulps", "worst in", "where (worst)", "checks measured",
            "checks lost", "lost ranges", "divergence", "oracle"]
    measured = df[df["precision"].isin(JUDGED + ("measured",)) & df["max_ulp_err"].notna()]
    if measured.empty:
        return pd.DataFrame(columns=cols)
    out = []
    for (layer, fw, dtype), g in measured.groupby(GROUP_KEY, sort=False):
        worst = g.loc[g["max_ulp_err"].idxmax()]
        lost = g[g["precision"] == "lost"]
        ranges = []
        for (kind, name), t in lost.groupby(["kind", "name"], sort=True):
            label = f"{'output' if kind == 'out' else 'gradient'} {name}"
            ranges.append(_describe_runs(label, *_merged_runs(t["ulp_lost"])))
        out.append({"layer": layer, "framework": fw, "dtype": dtype, "worst ulps": worst["max_ulp_err"],
                    "worst in": f"{worst['kind']} {worst['name']}", "where (worst)": worst["ulp_where"],
                    "checks measured": len(g), "checks lost": len(lost), "lost ranges": " | ".join(ranges),
                    "divergence": ", ".join(sorted(set(lost["divergence"]) - {""})),
                    "oracle": "mpmath" if worst["ulp_oracle"].startswith("mpmath") else "float64 oracle"})
    return _by_family(pd.DataFrame(out), "framework", "dtype")[cols]


def keeps_and_loses(df: pd.DataFrame) -> pd.DataFrame:
    """Every place where one framework keeps the digits another loses: the same
    case and tensor judged "ok" for one and "lost" for the other, grouped."""
    cols = ["family", "layer", "dtype", "tensor", "keeps", "its worst ulps", "loses", "worst ulps", "cases",
            "where (worst)"]
    on = ["layer", "dtype", "case", "kind", "name"]
    keep = df[df["precision"] == "ok"][on + ["framework", "max_ulp_err"]]
    lose = df[df["precision"] == "lost"][on + ["framework", "max_ulp_err", "ulp_where"]]
    p = keep.merge(lose, on=on, suffixes=("_keep", "_lose"))
    p = p[p["framework_keep"] != p["framework_lose"]]
    if p.empty:
        return pd.DataFrame(columns=cols)
    p = p.assign(tensor=p["kind"] + " " + p["name"]).sort_values("max_ulp_err_lose", ascending=False, kind="stable")
    out = p.groupby(["layer", "dtype", "tensor", "framework_keep", "framework_lose"], sort=False).agg(
        **{"its worst ulps": ("max_ulp_err_keep", "max"), "worst ulps": ("max_ulp_err_lose", "first"),
           "cases": ("case", "nunique"), "where (worst)": ("ulp_where", "first")}).reset_index()
    out = out.rename(columns={"framework_keep": "keeps", "framework_lose": "loses"})
    return _by_family(out, "dtype", "tensor")[cols]


def _precision_section(df: pd.DataFrame, notes: dict) -> str:
    bound = notes.get("precision", {})
    judged = df["precision"].isin(JUDGED)
    unmeasured = df[(df["precision"] == "not measured") & df["status"].isin(["pass", "fail"])]
    return (f"<p>Each element's error relative to the element itself, in ulps of the case dtype (the dtype's "
            f"spacing at |exact value|), wherever the exact value is a normal number of the dtype: exact zeros, "
            f"subnormal exact values and elements the oracle could not resolve are left out and counted in "
            f"<code>ulp_oracle</code> (gradients.csv). For the element-wise layers (activations, the losses) the exact "
            f"value comes from the precision oracle (mpmath, evaluated at two precisions; an element where they "
            f"disagree is unresolved, never guessed); float32 checks of other layers are measured against the "
            f"float64 oracle (no verdict); float64 checks of other layers are not measured. A judged check "
            f"<em>lost</em> digits when its worst element is more than "
            f"{html.escape(str(bound.get('ulps', '?')))} ulps off ({html.escape(bound.get('reason', ''))}). "
            f"{'These findings fail the run (--strict-precision).' if bound.get('strict') else 'Informational: these findings do not fail the run; --strict-precision makes them fail.'} "
            f"{int(judged.sum())} checks judged, {int((df['precision'] == 'lost').sum())} lost digits; "
            f"{len(unmeasured)} checks not measured.</p>"
            + _section("precision-worst", "Worst element per layer x framework x dtype, and where digits are lost",
                       _table(precision_table(df), wide=True), level=3)
            + _section("precision-keeps", "Where one framework keeps the digits another loses (same case, same tensor)",
                       _table(keeps_and_loses(df), wide=True), level=3))


def _special_groups(rows: pd.DataFrame):
    checked = rows[rows["status"] != "not_applicable"]
    return checked.groupby(GROUP_KEY, sort=False)


def nonfinite_table(df: pd.DataFrame) -> pd.DataFrame:
    """Per layer x framework x dtype, the checks of cases holding NaN or Inf: how many
    came out with NaN or Inf at the oracle's positions and values, how many differ
    there in a recorded way (known divergence, named), how many fail, and one example."""
    cols = ["family", "layer", "framework", "dtype", "cases", "checks", "non-finite results", "as the oracle",
            "known divergence", "not passing", "divergences", "example"]
    rows = []
    for (layer, fw, dtype), g in _special_groups(df[df["special"].str.contains("NaN|Inf", regex=True)]):
        nonfinite = g[g["nonfinite"] != ""]
        explained = g[g["status"] == "known_divergence"]
        bad = g[g["status"].isin(["fail", "error"])]
        shown = pd.concat([bad, explained[explained["nonfinite"] != ""], explained]).head(1)
        example = "".join(f"{r['kind']} {r['name']}: {r['nonfinite'] or r['detail']} (inputs: {r['special']})"
                          for _, r in shown.iterrows())
        rows.append({"layer": layer, "framework": fw, "dtype": dtype, "cases": g["case"].nunique(), "checks": len(g),
                     "non-finite results": len(nonfinite),
                     "as the oracle": int((nonfinite["status"] == "pass").sum()),
                     "known divergence": len(explained), "not passing": len(bad),
                     "divergences": ", ".join(sorted(set(explained["divergence"]) - {""})), "example": example})
    return _by_family(pd.DataFrame(rows, columns=cols[1:]), "framework", "dtype")[cols]


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


def _flushed_counts(cells) -> tuple[int, int]:
    pairs = [c.split(" of ") for c in cells if c]
    return sum(int(k) for k, _ in pairs), sum(int(m) for _, m in pairs)


def subnormal_table(df: pd.DataFrame) -> pd.DataFrame:
    """Per layer x framework x dtype, the checks of cases with subnormal inputs or
    subnormal exact results: how many subnormal exact values came back as 0
    (flushed), and what that did (the worst error against the tolerance, the
    checks that did not pass, the divergences that explain them)."""
    cols = ["family", "layer", "framework", "dtype", "cases", "checks", "subnormal inputs in", "flushed to 0",
            "worst err/atol", "not passing", "divergences"]
    subnormal = df["special"].str.contains("subnormal") | (df["flushed"] != "")
    rows = []
    for (layer, fw, dtype), g in _special_groups(df[subnormal]):
        k, m = _flushed_counts(g["flushed"])
        ratio = (g["max_abs_err"] / g["atol"]).replace([np.inf, -np.inf], np.nan)
        rows.append({"layer": layer, "framework": fw, "dtype": dtype, "cases": g["case"].nunique(), "checks": len(g),
                     "subnormal inputs in": int(g.loc[g["special"].str.contains("subnormal"), "case"].nunique()),
                     "flushed to 0": f"{k} of {m}" if m else "none subnormal",
                     "worst err/atol": float(ratio.max()) if ratio.notna().any() else np.nan,
                     "not passing": int((~g["status"].isin(["pass"])).sum()),
                     "divergences": ", ".join(sorted(set(g.loc[g["status"] == "known_divergence", "divergence"])
                                                     - {""}))})
    return _by_family(pd.DataFrame(rows, columns=cols[1:]), "framework", "dtype")[cols]


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


def step_table(df: pd.DataFrame) -> pd.DataFrame:
    """Per training-step layer x framework x dtype: the worst err / atol at each
    step t over its trajectory outputs ``name@t`` (``w@t``, ``m@t``, ``loss@t``...;
    the tolerance itself grows with t: see its reason in the rows)."""
    steps = df["name"].map(step_of)
    d = df[steps.notna() & (df["atol"] > 0)]
    if d.empty:
        return pd.DataFrame()
    d = d.assign(step=steps[d.index], ratio=d["max_abs_err"] / d["atol"])
    table = d.pivot_table(index=["layer", "framework", "dtype"], columns="step", values="ratio", aggfunc="max")
    table.columns = [f"step {int(t)}" for t in table.columns]
    return table.map(lambda v: "" if pd.isna(v) else f"{v:.2g}").reset_index()


def _training_section(df: pd.DataFrame, notes: dict) -> str:
    training = notes.get("training") or {}
    steps = step_table(df[df["layer"].map(family) == "training step"])
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
    return ("<p>Errors against tolerance: one row per layer; each dot is one check: its largest absolute error divided by the atol it had to "
            "meet, on a log scale, grouped by family (names at the right). Colours are frameworks, markers "
            "dtypes (legend above). The vertical line at 1 is the pass line: a dot right of it did not pass (ringed in black: a known divergence or a "
            "failure). A row whose dots sit far left has room to tighten its tolerance; a cloud close to the line "
            "is where a tolerance is tight. Errors that are NaN (an error raised, a check not applicable) are not "
            "drawn; an exact match is drawn at the left edge. Gradient flow through time (where a layer through "
            "time ran): the norm of the gradient reaching each step, the oracle's profile as a line and each "
            "framework's as markers.</p>" + figures)


def _page(df, summary, divergences, notes, run, worst, plots=None) -> str:
    bad = df[~df["status"].isin(["pass", "not_applicable"])].sort_values(["status", "err_eps"],
                                                                         ascending=[True, False])
    worst_pass = df[df["status"] == "pass"].nlargest(worst, "err_eps")
    versions = ", ".join(f"{fw} {v}" for fw, v in df.groupby("framework")["framework_version"].last().items())
    references = ", ".join(sorted(set(df["reference"]))) or "none"
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    partial = " (partial)" if run["partial"] else ""
    by_family = _by_family(summary, "framework", "dtype")
    families = list(dict.fromkeys(by_family["family"]))
    summary_body = "".join(
        _section(f"summary-{fam.replace(' ', '-')}", fam,
                 _table(by_family[by_family["family"] == fam].drop(columns="family"), wide=True), level=3)
        for fam in families) or "<p>None.</p>"
    bad_body = _table(not_passing_groups(bad), wide=True)
    if not bad.empty:
        bad_body += (f"<details><summary>All {len(bad)} checks that did not pass, one per line</summary>"
                     f"{_table(_checks(bad), wide=True)}</details>")
    sections = [
        ("glance", "At a glance", at_a_glance(summary)),
        ("plots", "Plots: errors against tolerance, gradient flow through time", _plots_section(plots or {})),
        ("summary", "Summary: layer x framework x dtype, by family", summary_body),
        ("precision", "Precision: each element against itself, in ulps", _precision_section(df, notes)),
        ("special", "Special values: NaN, Inf and subnormal inputs", _special_section(df, notes)),
        ("training", "Training step: errors per step, and what the defaults change", _training_section(df, notes)),
        ("conventions", "Conventions: what each framework does where the math leaves a choice",
         _table(convention_table(df, notes), wide=True)),
        ("divergences", "Known divergences (reason and measured behaviour, as recorded by the run)",
         _table(divergences, wide=True)),
        ("not-applicable", "Checks that were not applicable (not run, not passed)",
         _table(_by_family(not_applicable_table(df), "framework", "dtype"), wide=True)),
        ("not-passing", "Every check that did not pass, grouped by layer and divergence (with its reproduction)",
         bad_body),
        ("worst-passing", f"The {worst} largest errors that passed", _table(_checks(worst_pass, False), wide=True)),
    ]
    toc = "".join(
        f'<li><a href="#{anchor}">{html.escape(caption)}</a>'
        + ("<ol>" + "".join(f'<li><a href="#summary-{fam.replace(" ", "-")}">{html.escape(fam)}</a></li>'
                            for fam in families) + "</ol>" if anchor == "summary" and families else "")
        + "</li>" for anchor, caption, _ in sections)
    body = "\n".join(_section(anchor, caption, content) for anchor, caption, content in sections)
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
    plots = render_plots(df, list(dict.fromkeys(_by_family(summary)["layer"])), family)
    # Everything is rendered before anything is written, so a failure leaves the old files.
    files = {
        "meta.json": json.dumps({"notes": notes, "run": run}, indent=2, default=str) + "\n",
        "summary.csv": _csv(summary),
        "report.html": _page(df, summary, divergences, notes, run, worst, plots),
        "gradients.csv": _csv(df),  # last: its presence means "a report is here"
    }
    target.mkdir(parents=True, exist_ok=True)
    if plots:
        (target / "plots").mkdir(exist_ok=True)
    for name, (_, png) in plots.items():
        if png:  # empty: the plot could not be drawn (its caption says why)
            _write_atomically(target / "plots" / f"{name}.png", png)
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
