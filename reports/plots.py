"""Plots for the report: rows in, PNG bytes out (matplotlib figures outside pyplot, no display).

Each plot is a function ``rows DataFrame -> Figure | None`` (None: nothing to
draw) registered in ``PLOTS`` under the file name it is written to
(``DIR/plots/NAME.png``) with its caption; ``render_plots`` draws every one.
A new plot (the gradient flow of recurrent layers, say) is one more function
and one more ``PLOTS`` entry.
"""

from __future__ import annotations

import io

import numpy as np
import pandas as pd

# err / atol below this is drawn at it (log scale; an exact match has no logarithm)
FLOOR = 1e-6
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
        x = np.maximum(part["ratio"].to_numpy(float), FLOOR)
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
    ax.set_xlabel(f"max |framework - reference| / atol per check (log; right of 1 fails; below {FLOOR:g} drawn at it)")
    ax.grid(axis="x", which="major", color="#eeeeee")
    ax.legend(loc="lower left", bbox_to_anchor=(0, 1.0), ncol=max(len(combos), 1), fontsize=8, frameon=False,
              markerscale=1.6)
    fig.tight_layout()
    return fig


# name -> (caption, function(rows, layer_order, family_of) -> Figure | None). A gradient-flow
# plot for the recurrent layers goes here when it exists.
PLOTS = {
    "errors": ("Errors against tolerance: each check's error in units of its atol", errors_against_tolerance),
}


def render_plots(df: pd.DataFrame, layer_order=None, family_of=None) -> dict:
    """``{name: (caption, png bytes)}`` for every plot that has something to draw; layers in
    ``layer_order``, grouped by ``family_of`` (layer -> family) when given."""
    out = {}
    for name, (caption, draw) in PLOTS.items():
        fig = draw(df, layer_order, family_of)
        if fig is None:
            continue
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        out[name] = (caption, buf.getvalue())
    return out
