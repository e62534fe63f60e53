"""Plots for the report: rows in, PNG bytes out (matplotlib figures outside pyplot, no display).

Each plot is a function ``rows DataFrame -> Figure | None`` (None: nothing to
draw) registered in ``PLOTS`` under the file name it is written to
(``DIR/plots/NAME.png``) with its caption; ``render_plots`` draws every one.
A new plot is one more function and one more ``PLOTS`` entry.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd

from .tables import step_index

# the sequence length from which a gradient-flow profile is worth a panel
LONG = 8
# err / atol below this is drawn at it (log scale; an exact match has no logarithm)
FLOOR = 1e-6
CEILING = 1e15  # and a ratio above it at CEILING: a float64 error of 1e308 must not stretch the axis to Inf
MARKERS = {"float32": "o", "float64": "s", "float16": "^", "bfloat16": "v"}
COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf"]
WITHIN = "#d08000"  # the ring of a check that did not pass although its error is within atol
# numpy has no bfloat16: its eps (8 bits of significand)
EPS = {"bfloat16": 2.0 ** -7}


def _figure(**kwargs):
    """A figure outside pyplot: no backend is chosen for the caller's process (a report
    rendered from a notebook leaves its backend alone), and nothing to close."""
    from matplotlib.figure import Figure

    return Figure(**kwargs)


def _panels(rows: int, cols: int, width: float, height: float):
    """A figure of rows x cols panels, each width x height inches: (figure, 2-d array of axes)."""
    fig = _figure(figsize=(width * cols, 0.6 + height * rows), dpi=90)
    return fig, np.atleast_2d(fig.subplots(rows, cols, squeeze=False))


def _label(text) -> str:
    """Data as plain plot text: no mathtext ("$"), no control characters."""
    return "".join(ch if ch.isprintable() else "?" for ch in str(text)).replace("$", r"\$")


def rings(d: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Which checks' dots are ringed: ``over`` did not pass on its error (error > atol: right of the pass
    line, ringed in black); ``within`` did not pass although its error is within atol (NaN or Inf landed
    elsewhere while every finite position passed, or, under --strict-precision, digits were lost: left of
    the line, ringed in WITHIN), so that no black ring ever sits on the passing side."""
    failed = d["status"].to_numpy() != "pass"
    within = (d["max_abs_err"] <= d["atol"]).to_numpy()
    return failed & ~within, failed & within


def errors_against_tolerance(df: pd.DataFrame, layer_order=None, family_of=None):
    """Per layer x framework x dtype, every check's max |error| / atol on a log
    axis (one row per layer, frameworks as colours, dtypes as markers), the pass
    line at 1, the checks that did not pass ringed (``rings``). NaN errors (errors,
    not applicable) are left out. ``family_of`` (layer -> family name), when given,
    labels and separates the families."""
    from matplotlib.lines import Line2D  # here, as in _figure: importing plots chooses no matplotlib backend

    ratio = df["max_abs_err"] / df["atol"]
    d = df.assign(ratio=ratio)[np.isfinite(ratio) & (df["atol"] > 0)]
    if d.empty:
        return None
    layers = [n for n in (layer_order or sorted(set(d["layer"]))) if n in set(d["layer"])]
    row = {layer: i for i, layer in enumerate(layers)}
    combos = sorted(set(zip(d["framework"], d["dtype"])))
    frameworks = sorted(set(d["framework"]))
    band = 0.8 / max(len(combos), 1)  # each framework x dtype gets its own strip inside a layer's row
    rng = np.random.default_rng(0)  # fixed jitter: the same rows give the same picture
    fig = _figure(figsize=(11, 1.2 + 0.32 * len(layers)), dpi=90)
    ax = fig.subplots()
    for j, (fw, dt) in enumerate(combos):
        part = d[(d["framework"] == fw) & (d["dtype"] == dt)]
        y = (part["layer"].map(row).to_numpy(float) - 0.4 + band * (j + 0.5)
             + rng.uniform(-band / 3, band / 3, len(part)))
        x = np.clip(part["ratio"].to_numpy(float), FLOOR, CEILING)
        colour = COLOURS[frameworks.index(fw) % len(COLOURS)]
        ax.scatter(x, y, s=9, marker=MARKERS.get(dt, "D"), c=colour, alpha=0.45, linewidths=0,
                   label=_label(f"{fw} {dt}"), rasterized=True)
        for ringed, edge in zip(rings(part), ("black", WITHIN)):
            if ringed.any():
                ax.scatter(x[ringed], y[ringed], s=22, marker=MARKERS.get(dt, "D"), facecolors="none",
                           edgecolors=edge, linewidths=0.7)
    ax.axvline(1.0, color="black", linewidth=1.2)
    ax.text(1.0, -0.9, " pass line: error = atol", fontsize=8, va="center")
    ax.set_xscale("log")
    ax.set_yticks(range(len(layers)), [_label(n) for n in layers], fontsize=8)
    ax.set_ylim(len(layers) - 0.5, -1)
    for i in range(len(layers) + 1):
        ax.axhline(i - 0.5, color="#e4e4e4", linewidth=0.6, zorder=0)
    if family_of is not None:  # a family's name at the right of its first row, a darker line above it
        previous = None
        for i, layer in enumerate(layers):
            fam = family_of(layer)
            if fam != previous:
                if i:
                    ax.axhline(i - 0.5, color="#888888", linewidth=0.9, zorder=0)
                ax.annotate(_label(fam), (1.005, i), xycoords=("axes fraction", "data"), fontsize=8,
                            style="italic", va="center", color="#444444")
                previous = fam
    ax.set_xlabel(f"max |framework - reference| / atol per check (log; right of 1 fails; drawn within "
                  f"[{FLOOR:g}, {CEILING:g}])")
    ax.grid(axis="x", which="major", color="#eeeeee")
    over, within = rings(d)
    ringed = [Line2D([], [], marker="o", linestyle="none", markerfacecolor="none", markeredgecolor=edge, label=text)
              for present, edge, text in ((over, "black", "ringed: did not pass on its error (error > atol)"),
                                          (within, WITHIN, "ringed: did not pass, error within atol (where NaN/Inf "
                                                           "land, or lost digits)")) if present.any()]
    if ringed:  # a legend of its own, inside; the axes' legend (above, laid out by tight_layout) is the one below
        ax.add_artist(ax.legend(handles=ringed, loc="lower right", fontsize=8, framealpha=0.9))
    ax.legend(loc="lower left", bbox_to_anchor=(0, 1.0), ncol=max(len(combos), 1), fontsize=8, frameon=False,
              markerscale=1.6)
    fig.tight_layout()
    return fig


def _parse_profile(text):
    """(reference, candidate) arrays from a flow row's profile, or None (unreadable,
    or no positive value to put on a log axis)."""
    try:
        p = json.loads(text)
        ref, got = (np.asarray(p[k], dtype=float) for k in ("reference", "candidate"))
    except (TypeError, ValueError, KeyError):
        return None
    return (ref, got) if ref.shape == got.shape and (ref > 0).any() else None


def _profiles(df: pd.DataFrame) -> pd.DataFrame:
    """Flow rows with a drawable profile (a report from before profiles has none),
    each with its two per-step norm arrays and its range in orders of magnitude."""
    if "profile" not in df.columns:
        return pd.DataFrame()
    d = df[df["kind"] == "flow"].assign(parsed=lambda f: f["profile"].map(_parse_profile))
    d = d[d["parsed"].notna()]
    if d.empty:
        return d
    d = d.assign(ref=d["parsed"].str[0], got=d["parsed"].str[1])
    d["steps"] = d["ref"].map(len)
    d["spread"] = d["ref"].map(lambda v: float(np.log10(v[v > 0].max() / v[v > 0].min())))
    return d


def flow_picks(d: pd.DataFrame) -> pd.DataFrame:
    """The flow row to draw per layer x dtype x framework (``d``: _profiles): the same case for every
    framework of a layer and dtype, one they all ran (the longest sequence, then the widest range, where
    vanishing or exploding shows best), so that the panels side by side compare like with like; where no
    case is common to them all, each framework's own such case. ``common`` says which."""
    ranked = d.sort_values(["steps", "spread", "case"], ascending=[False, False, True], kind="stable")
    picks = []
    for _, g in ranked.groupby(["layer", "dtype"], sort=False):
        everyone = g.groupby("case")["framework"].transform("nunique") == g["framework"].nunique()
        if everyone.any():
            case = g.loc[everyone, "case"].iloc[0]
            picks.append(g[g["case"] == case].drop_duplicates("framework").assign(common=True))
        else:
            picks.append(g.drop_duplicates("framework").assign(common=False))
    return pd.concat(picks) if picks else d.assign(common=pd.Series(dtype=bool))


def _eps(dtype: str) -> float:
    try:
        return float(np.finfo(dtype).eps)
    except TypeError:
        return EPS.get(dtype, float(np.finfo(np.float64).eps))


def resolved(values: np.ndarray, floor: float) -> tuple[np.ndarray, np.ndarray]:
    """``values`` as drawn on a log axis: below ``floor`` (the profile's largest value times the dtype's eps:
    nothing below it is resolved, and no verdict looks there) at the floor, and which those are; NaN where
    not finite."""
    below = ~(values >= floor) & np.isfinite(values)
    return np.where(np.isfinite(values), np.maximum(values, floor), np.nan), below


def gradient_flow(df: pd.DataFrame, layer_order=None, family_of=None):
    """For each layer through time (rows) and framework (columns): ||dL/dx_t|| over
    t on a log axis, the oracle's profile as a line and the framework's as markers,
    per dtype for the case ``flow_picks`` chooses (one every framework ran, where
    there is one); values under the dtype's resolution drawn at it (``resolved``:
    the line flat, the framework's marked x, the floor dashed); only layers with a
    sequence of LONG steps or more, where there is one."""
    d = _profiles(df)
    if d.empty:
        return None
    longest = d.groupby("layer")["steps"].max()
    if (longest >= LONG).any():  # a profile of a few steps shows little: the layers drawn long enough, if any
        d = d[d["layer"].isin(longest[longest >= LONG].index)]
    picks = flow_picks(d)
    layers = [n for n in (layer_order or sorted(set(d["layer"]))) if n in set(d["layer"])]
    frameworks = sorted(set(d["framework"]))
    fig, axes = _panels(len(layers), len(frameworks), 5.2, 2.3)
    for i, layer in enumerate(layers):
        for j, fw in enumerate(frameworks):
            ax = axes[i, j]
            part = picks[(picks["layer"] == layer) & (picks["framework"] == fw)].sort_values("dtype")
            for k, pick in enumerate(part.to_dict("records")):
                dt, t, colour = pick["dtype"], np.arange(pick["steps"]), COLOURS[k % len(COLOURS)]
                floor = float(np.nanmax(pick["ref"])) * _eps(dt)
                ref, ref_below = resolved(pick["ref"], floor)
                got, got_below = resolved(pick["got"], floor)
                shared = "" if pick["common"] else ", this framework's own: no case common to all"
                ax.plot(t, ref, color=colour, linewidth=1.2, label=_label(f"oracle ({dt} case {pick['case']}{shared})"))
                ax.scatter(t[~got_below], got[~got_below], s=10, marker=MARKERS.get(dt, "D"), facecolors="none",
                           edgecolors=colour, linewidths=0.8, label=_label(f"{fw} {dt}"))
                if ref_below.any() or got_below.any():  # say where the picture stops meaning anything
                    ax.axhline(floor, color=colour, linewidth=0.7, linestyle="--",
                               label=_label(f"{dt} floor: max x eps = {floor:.1e} (x: below it)"))
                if got_below.any():
                    ax.scatter(t[got_below], got[got_below], s=14, marker="x", color=colour, linewidths=0.8)
            if not part.empty:
                ax.set_yscale("log")
                ax.legend(fontsize=6.5, frameon=False)
            ax.set_title(_label(f"{layer}: {fw}"), fontsize=9)
            ax.tick_params(labelsize=7)
            ax.grid(color="#eeeeee")
            if i == len(layers) - 1:
                ax.set_xlabel("time step t", fontsize=8)
            if j == 0:
                ax.set_ylabel("||dL/dx_t||", fontsize=8)
    fig.tight_layout()
    return fig


GENERIC_EDGES = {"batch_1", "batch_0", "unbatched", "nonfinite", "subnormal"}  # say nothing about depth


def _specific(edges: str) -> str:
    return ", ".join(e for e in str(edges).split(", ") if e and e not in GENERIC_EDGES)


def health_picks(df: pd.DataFrame, per_model: int = 3) -> pd.DataFrame:
    """The cotangent rows (kind "cot") of the cases to draw per model x dtype: among the deepest
    cases every framework ran, up to ``per_model`` that reached different edges of the model's
    own (a deep sigmoid MLP beside a deep ReLU one and a residual one), those first."""
    cot = df[(df["family"] == "models") & (df["kind"] == "cot")].dropna(subset=["reference_norm"])
    picks = []
    for _, g in cot.groupby(["layer", "dtype"], sort=True):
        everyone = g.groupby("case")["framework"].nunique() == g["framework"].nunique()
        depth = g.groupby("case")["name"].nunique()[everyone]
        if depth.empty:
            continue
        deepest = g[g["case"].isin(depth[depth == depth.max()].index)].drop_duplicates("case")
        deepest = deepest.assign(_own=deepest["edges"].map(_specific))
        deepest = deepest.sort_values(["_own", "case"], key=lambda s: s if s.name == "case" else s == "",
                                      kind="stable").drop_duplicates("_own")
        picks.append(g[g["case"].isin(deepest["case"].head(per_model))])
    return pd.concat(picks) if picks else cot.iloc[:0]


def gradient_health(df: pd.DataFrame, layer_order=None, family_of=None):
    """For each model (rows) and framework (columns): the norm of the gradient arriving at each
    layer's output over the layers, on a log axis, the oracle's as a line and the framework's as
    markers, for the cases ``health_picks`` chooses (float32, else the dtype there is); values
    below the dtype's resolution (the case's largest norm times eps) drawn at it, as in the
    gradient-flow plot."""
    picks = health_picks(df)
    if picks.empty:
        return None
    dtype = "float32" if (picks["dtype"] == "float32").any() else picks["dtype"].iloc[0]
    picks = picks[picks["dtype"] == dtype]
    models = [n for n in (layer_order or sorted(set(picks["layer"]))) if n in set(picks["layer"])]
    frameworks = sorted(set(picks["framework"]))
    fig, axes = _panels(len(models), len(frameworks), 5.6, 2.6)
    for i, model in enumerate(models):
        for j, fw in enumerate(frameworks):
            ax = axes[i, j]
            part = picks[(picks["layer"] == model) & (picks["framework"] == fw)]
            names, floors = {}, []
            for k, (case, c) in enumerate(part.groupby("case", sort=True)):
                c = c.assign(_i=c["name"].map(step_index)).sort_values("_i")
                for at, name in enumerate(c["name"]):  # a position where the cases' layers differ: its index only
                    names[at] = name if names.get(at, name) == name else f"{step_index(name)}:*"
                colour, x = COLOURS[k % len(COLOURS)], np.arange(len(c))
                ref, got = c["reference_norm"].to_numpy(float), c["norm"].to_numpy(float)
                floors.append(float(np.nanmax(ref)) * _eps(dtype))
                ref, _ = resolved(ref, floors[-1])
                got, below = resolved(got, floors[-1])
                what = _specific(c["edges"].iloc[0]) or "drawn freely"
                ax.plot(x, ref, color=colour, linewidth=1.2, label=_label(f"case {case} ({what})"))
                ax.scatter(x[~below], got[~below], s=12, marker=MARKERS.get(dtype, "D"), facecolors="none",
                           edgecolors=colour, linewidths=0.8)
                if below.any():
                    ax.scatter(x[below], got[below], s=14, marker="x", color=colour, linewidths=0.8)
            if names:
                ax.axhline(min(floors), color="#888888", linewidth=0.7, linestyle="--",
                           label=_label(f"resolution: largest norm x {dtype} eps (below: drawn at it, x)"))
                ax.scatter([], [], s=12, marker=MARKERS.get(dtype, "D"), facecolors="none", edgecolors="#444444",
                           label=_label(f"{fw} (markers; lines: oracle)"))
                ax.set_yscale("log")
                ax.set_xticks(np.arange(len(names)))
                ax.set_xticklabels([_label(names[i]) for i in sorted(names)], rotation=90, fontsize=5.5)
                ax.legend(fontsize=6, frameon=False)
            ax.set_title(_label(f"{model}: {fw} ({dtype})"), fontsize=9)
            ax.tick_params(axis="y", labelsize=7)
            ax.grid(color="#eeeeee")
            if j == 0:
                ax.set_ylabel("||dL/d(layer output)||", fontsize=8)
    fig.tight_layout()
    return fig


# name -> (caption, function(rows, layer_order, family_of) -> Figure | None)
PLOTS = {
    "errors": ("Errors against tolerance: each check's error in units of its atol", errors_against_tolerance),
    "gradient_flow": ("Gradient flow through time: the norm of the gradient reaching each step, oracle (line) "
                      "and framework (markers), for one case per layer and dtype that every framework ran (the "
                      "longest sequence); values below the dtype's resolution drawn at it (dashed line, x)",
                      gradient_flow),
    "gradient_health": ("Gradient health through depth: the norm of the gradient arriving at each layer's output, "
                        "input side left, oracle (line) and framework (markers), for the deepest cases every "
                        "framework ran (a deep sigmoid MLP vanishes where ReLU and residual adds carry it)",
                        gradient_health),
}
MODEL_PLOTS = ("gradient_health",)  # shown in the whole-models section, not among the plots


def render_plots(df: pd.DataFrame, layer_order=None, family_of=None) -> dict:
    """``{name: (caption, png bytes)}`` for every plot that has something to draw; layers in
    ``layer_order``, grouped by ``family_of`` (layer -> family) when given."""
    out = {}
    for name, (caption, draw) in PLOTS.items():
        try:
            fig = draw(df, layer_order, family_of)
            if fig is None:
                continue
            buf = io.BytesIO()
            fig.savefig(buf, format="png")
        except Exception as e:  # noqa: BLE001 - a plot that cannot be drawn costs the plot, never the report
            out[name] = (f"{caption} (not drawn: {type(e).__name__}: {e})", b"")
            continue
        out[name] = (caption, buf.getvalue())
    return out
