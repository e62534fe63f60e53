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

# the sequence length from which a gradient-flow profile is worth a panel
LONG = 8
# err / atol below this is drawn at it (log scale; an exact match has no logarithm)
FLOOR = 1e-6
CEILING = 1e15  # and a ratio above it at CEILING: a float64 error of 1e308 must not stretch the axis to Inf
MARKERS = {"float32": "o", "float64": "s", "float16": "^", "bfloat16": "v"}
COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf"]


def _figure(**kwargs):
    """A figure outside pyplot: no backend is chosen for the caller's process (a report
    rendered from a notebook leaves its backend alone), and nothing to close."""
    from matplotlib.figure import Figure

    return Figure(**kwargs)


def _label(text) -> str:
    """Data as plain plot text: no mathtext ("$"), no control characters."""
    return "".join(ch if ch.isprintable() else "?" for ch in str(text)).replace("$", r"\$")


def errors_against_tolerance(df: pd.DataFrame, layer_order=None, family_of=None):
    """Per layer x framework x dtype, every check's max |error| / atol on a log
    axis (one row per layer, frameworks as colours, dtypes as markers), the pass
    line at 1. NaN errors (errors, not applicable) are left out. ``family_of``
    (layer -> family name), when given, labels and separates the families."""
    ratio = df["max_abs_err"] / df["atol"]
    d = df.assign(ratio=ratio)[np.isfinite(ratio) & (df["atol"] > 0)]
    if d.empty:
        return None
    layers = [l for l in (layer_order or sorted(set(d["layer"]))) if l in set(d["layer"])]
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
        over = part["status"].to_numpy() != "pass"
        colour = COLOURS[frameworks.index(fw) % len(COLOURS)]
        ax.scatter(x, y, s=9, marker=MARKERS.get(dt, "D"), c=colour, alpha=0.45, linewidths=0,
                   label=_label(f"{fw} {dt}"), rasterized=True)
        if over.any():  # checks that did not pass, ringed in black
            ax.scatter(x[over], y[over], s=22, marker=MARKERS.get(dt, "D"), facecolors="none", edgecolors="black",
                       linewidths=0.7)
    ax.axvline(1.0, color="black", linewidth=1.2)
    ax.text(1.0, -0.9, " pass line: error = atol", fontsize=8, va="center")
    ax.set_xscale("log")
    ax.set_yticks(range(len(layers)), [_label(l) for l in layers], fontsize=8)
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


def gradient_flow(df: pd.DataFrame, layer_order=None, family_of=None):
    """For each layer through time (rows) and framework (columns): ||dL/dx_t|| over
    t on a log axis, the oracle's profile as a line and the framework's as
    markers, for the case of each dtype with the longest sequence (ties: the
    widest range, where vanishing or exploding shows best); only layers with a
    sequence of LONG steps or more, where there is one."""
    d = _profiles(df)
    if d.empty:
        return None
    longest = d.groupby("layer")["steps"].max()
    if (longest >= LONG).any():  # a profile of a few steps shows little: the layers drawn long enough, if any
        d = d[d["layer"].isin(longest[longest >= LONG].index)]
    layers = [l for l in (layer_order or sorted(set(d["layer"]))) if l in set(d["layer"])]
    frameworks = sorted(set(d["framework"]))
    fig = _figure(figsize=(5.2 * len(frameworks), 0.6 + 2.3 * len(layers)), dpi=90)
    axes = np.atleast_2d(fig.subplots(len(layers), len(frameworks), squeeze=False))
    for i, layer in enumerate(layers):
        for j, fw in enumerate(frameworks):
            ax = axes[i, j]
            part = d[(d["layer"] == layer) & (d["framework"] == fw)]
            for k, (dt, rows) in enumerate(sorted(part.groupby("dtype"), key=lambda kv: kv[0])):
                pick = rows.sort_values(["steps", "spread"], ascending=False).iloc[0]
                t = np.arange(pick["steps"])
                colour = COLOURS[k % len(COLOURS)]
                ref, got = pick["ref"], pick["got"]
                ax.plot(t, np.where(ref > 0, ref, np.nan), color=colour, linewidth=1.2,
                        label=_label(f"oracle ({dt} case {pick['case']})"))
                ax.scatter(t, np.where(got > 0, got, np.nan), s=10, marker=MARKERS.get(dt, "D"),
                           facecolors="none", edgecolors=colour, linewidths=0.8, label=_label(f"{fw} {dt}"))
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


# name -> (caption, function(rows, layer_order, family_of) -> Figure | None)
PLOTS = {
    "errors": ("Errors against tolerance: each check's error in units of its atol", errors_against_tolerance),
    "gradient_flow": ("Gradient flow through time: the norm of the gradient reaching each step, oracle (line) "
                      "and framework (markers), for the longest sequence drawn per layer, framework and dtype",
                      gradient_flow),
}


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
