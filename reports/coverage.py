"""Coverage: what a layer x framework x dtype really checked, against what it should.

From the rows a run recorded and the group's census (its plan: each declared
edge planned, or why the framework cannot run it; the configurations it
refused, by reason), per group: the cases that really ran (a comparison was
made: pass, fail or known divergence), the distinct configurations among them
(attributes and shapes), and the cases reaching each runnable edge. A profile's
floors say how many cases and configurations a group needs (or every
configuration its plan could find, where the space has fewer) and that every
runnable edge is reached: ``shortfall`` says what falls short.
"""

from __future__ import annotations

import pandas as pd

RAN = ("pass", "fail", "known_divergence")


def _frame(rows) -> pd.DataFrame:
    return rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))


def group_coverage(rows, census: dict | None) -> dict:
    """One group's coverage from its rows (every row of one layer x framework x dtype)."""
    df = _frame(rows)
    ran = df[df["status"].isin(RAN)] if len(df) else df
    cases = ran.drop_duplicates("case") if len(ran) else ran
    reached: dict[str, int] = {}
    for names in cases.get("edges", pd.Series(dtype=str)):
        for name in filter(None, (n.strip() for n in str(names).split(","))):
            reached[name] = reached.get(name, 0) + 1
    edges = (census or {}).get("edges", {})
    runnable = [e for e, why in edges.items() if not why]
    return {"cases": len(cases), "configurations": int(cases["attrs"].nunique()) if len(cases) else 0,
            "reached": reached, "runnable": runnable,
            "unreached": [e for e in runnable if not reached.get(e)],
            "not_runnable": {e: why for e, why in edges.items() if why},
            "exhausted": bool((census or {}).get("exhausted")), "planned": (census or {}).get("planned")}


def shortfall(rows, census: dict | None, floors: dict | None) -> list[str]:
    """What one group's coverage lacks against ``floors`` ([] when it has it all, or no floors)."""
    if not floors:
        return []
    cov = group_coverage(rows, census)
    short = []
    wanted_cases = min(floors["cases"], cov["planned"] or floors["cases"])
    if cov["cases"] < wanted_cases:
        short.append(f"{cov['cases']} cases really ran (fewer than {wanted_cases})")
    wanted = floors["configurations"]
    if cov["exhausted"]:  # the plan found no configuration left that it had not planned: all of them count
        wanted = min(wanted, cov["configurations"])
    if cov["configurations"] < wanted:
        short.append(f"{cov['configurations']} distinct configurations among them (fewer than {wanted})")
    if cov["unreached"]:
        short.append(f"runnable edges not reached: {', '.join(cov['unreached'])}")
    return short


def coverage_table(df: pd.DataFrame, census: list[dict], floors: dict | None) -> pd.DataFrame:
    """Per layer x framework x dtype: cases that ran, configurations, each edge with its count
    (or why the framework cannot run it), what the framework refused, and the shortfall."""
    by_group = {(c["layer"], c["framework"], c["dtype"]): c for c in census}
    out = []
    for (layer, fw, dtype), g in df.groupby(["layer", "framework", "dtype"], sort=False):
        entry = by_group.get((layer, fw, dtype))
        cov = group_coverage(g, entry)
        edges = [f"{e} {cov['reached'].get(e, 0)}" for e in cov["runnable"]]
        out.append({"family": g["family"].iloc[0] if "family" in g else "", "layer": layer, "framework": fw,
                    "dtype": dtype, "cases": cov["cases"], "configurations": cov["configurations"],
                    "edges reached (cases)": ", ".join(edges),
                    "edges it cannot run": "; ".join(f"{e}: {why}" for e, why in cov["not_runnable"].items()),
                    "configurations it cannot express (draws)": "; ".join(
                        f"{why} ({n})" for why, n in sorted((entry or {}).get("refused", {}).items(),
                                                            key=lambda kv: -kv[1])),
                    # a group's own floors where its census has them (a compiled mode plans fewer cases)
                    "shortfall": "; ".join(shortfall(g, entry, entry.get("floors", floors))) if entry is not None else
                    "no census (a report from before the plans, or a test outside them)"})
    return pd.DataFrame(out, columns=["family", "layer", "framework", "dtype", "cases", "configurations",
                                      "edges reached (cases)", "edges it cannot run",
                                      "configurations it cannot express (draws)", "shortfall"])
