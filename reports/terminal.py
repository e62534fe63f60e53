"""The end of a run in the terminal: what failed, what diverged as known, where the report is.

At most about 25 lines by default (``verbose`` lists everything): the count of
checks and groups; each group that failed, with its worst error and one replay
command; the known divergences that explained checks, with how many groups and
cases; one counted line for the divergences whose condition held but that
explained nothing (listed in the report); the path of report.html.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

FAILED_SHOWN = 10  # failing groups listed before "and N more"
DIVERGENCES_SHOWN = 8


def _worst(g: pd.DataFrame) -> pd.Series:
    ratio = (g["max_abs_err"] / g["atol"].where(g["atol"] > 0)).fillna(np.inf)
    return g.loc[ratio.idxmax()], float(ratio.max())


def failed_groups(df: pd.DataFrame) -> list[str]:
    """One line per layer x framework x dtype with a failing or erroring check, worst first."""
    bad = df[df["status"].isin(["fail", "error"])]
    lines = []
    for (layer, fw, dtype), g in bad.groupby(["layer", "framework", "dtype"], sort=False):
        row, ratio = _worst(g)
        cases = df[(df["layer"] == layer) & (df["framework"] == fw) & (df["dtype"] == dtype)]["case"].nunique()
        how = (f"error: {row['detail'][:90]}" if row["status"] == "error" else
               f"worst {ratio:.3g} x atol in {row['kind']} {row['name']}")
        lines.append((ratio, f"{layer}-{fw}-{dtype}: {g['case'].nunique()} of {cases} cases; {how}"
                             + (f"; {row['reproduce']}" if row["reproduce"] else "")))
    return [line for _, line in sorted(lines, key=lambda x: -x[0] if np.isfinite(x[0]) else -np.inf)]


def divergence_lines(df: pd.DataFrame) -> list[str]:
    """One line per known divergence that explained checks: groups and cases, most groups first."""
    kd = df[df["status"] == "known_divergence"]
    kd = kd.assign(group=kd["layer"] + "-" + kd["framework"] + "-" + kd["dtype"])
    counts = kd.groupby("divergence").agg(groups=("group", "nunique"), cases=("case", "nunique"))
    counts = counts.sort_values(["groups", "cases"], ascending=False)
    return [f"{key}: {c.groups} group(s), {c.cases} case(s)" for key, c in counts.iterrows()]


def _listed(title, lines, title_colour, colour, limit, verbose, where) -> list[tuple[str, str]]:
    """A titled list, cut at ``limit`` lines unless ``verbose``, saying where the rest is."""
    shown = lines if verbose else lines[:limit]
    out = [(title, title_colour)] + [(f"  {line}", colour) for line in shown]
    if len(shown) < len(lines):
        out.append((f"  and {len(lines) - len(shown)} more (-v lists them; {where})", colour))
    return out


def summary_lines(written, verbose: bool = False) -> list[tuple[str, str]]:
    """(line, colour) pairs; colour is "red", "yellow", "green" or ""."""
    df = written.frame
    out = [(written.text, "red" if df is not None and df["status"].isin(["fail", "error"]).any() else "green")]
    if df is None:
        return out
    failed = failed_groups(df)
    if failed:
        out += _listed(f"{len(failed)} group(s) failed:", failed, "red", "red", FAILED_SHOWN, verbose,
                       "the report's 'not passing' section")
    divergences = divergence_lines(df)
    if divergences:
        out += _listed(f"known divergences that explained checks ({len(divergences)}):", divergences, "yellow", "",
                       DIVERGENCES_SHOWN, verbose, "the report's known divergences")
    if written.warnings:
        if verbose:
            out += [(f"WARNING: {message}", "yellow") for message in written.warnings]
        else:
            out.append((f"{len(written.warnings)} known divergence(s) held in some case but explained nothing: is "
                        "each still true? (-v lists them; the report's known divergences say which)", "yellow"))
    out.append((f"report: {written.path / 'report.html'}", ""))
    return out
