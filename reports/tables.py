"""The report's tables, computed from rows (a DataFrame from files.frame): the per-group summary and its
verdicts, and the tables the page shows (divergences, conventions, not applicable, not passing, precision,
special values, training steps). Tables that list layers lead with their family, in FAMILY_ORDER.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from .rows import GROUP_KEY, STATUSES, step_of

PARTLY_NA = "pass (partly n/a)"
# A group's verdict, worst first: any fail or error; any known divergence; nothing
# could be checked; everything checked passed but some checks were not applicable;
# every check ran and passed.
VERDICTS = ("fail", "known_divergence", "not_applicable", PARTLY_NA, "pass")
SUMMARY_COLUMNS = GROUP_KEY + ["verdict", "cases", "checks", "checked", *STATUSES, "worst_rel_err", "worst_err_eps",
                               "rtol", "max_condition", "convention", "framework_version"]

# The order the report shows families in; a family not named here comes after them, alphabetically,
# and "other" (a layer of the user's that names no family) last. Which family a layer is in, the rows say.
FAMILY_ORDER = ("dense", "activations", "losses", "convolution", "pooling", "normalization", "embedding", "dropout",
                "recurrent", "attention", "training step", "models", "ported model", "other")


def layer_families(df: pd.DataFrame) -> dict:
    """Layer -> the family its rows name (the last row's, should merged rows name two)."""
    return dict(zip(df["layer"], df["family"]))


def _family_rank(families: pd.Series) -> pd.Series:
    named = [f for f in FAMILY_ORDER if f != "other"]
    unnamed = sorted(set(families) - set(FAMILY_ORDER))
    return families.map({f: i for i, f in enumerate(named + unnamed + ["other"])})


def by_family(table: pd.DataFrame, families: dict, *more) -> pd.DataFrame:
    """``table`` with a leading ``family`` column (``families``: layer -> family, see layer_families), sorted by
    family (FAMILY_ORDER), then layer, then ``more``."""
    out = table.copy()
    out.insert(0, "family", out["layer"].map(families).fillna("other"))
    return (out.assign(_rank=_family_rank(out["family"])).sort_values(["_rank", "layer", *more], kind="stable")
            .drop(columns="_rank").reset_index(drop=True))


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


STALE = "explained nothing here"  # the divergence table's column for a divergence that may no longer hold


def divergence_table(df: pd.DataFrame, notes: dict) -> pd.DataFrame:
    """Every divergence the run recorded: how many cases fell inside its condition
    here, how many checks it explained, and (STALE) whether its condition held but
    every check passed, so that it may no longer be true. A key named by rows but
    missing from the notes (an input merged without meta.json) is listed as unrecorded."""
    recorded = {d["key"]: d for d in notes["divergences"]}
    keys = list(recorded) + sorted(set(df["divergence"]) - set(recorded) - {""})
    rows = []
    for key in keys:
        d = recorded.get(key, {"reason": "(not recorded: this report's notes do not describe it)"})
        # a case the framework could not express says nothing about the divergence
        inside = df[(df["divergence"] == key) & (df["status"] != "not_applicable")]
        cases, explained = inside["case"].nunique(), int((inside["status"] == "known_divergence").sum())
        # held but explained nothing: may no longer be true; never held: this run's cases did not reach it
        stale = (f"its condition held in {cases} case(s) but every check passed: is it still true?"
                 if cases and not explained else "")
        rows.append({"divergence": key, "layer": d.get("layer", ""), "framework": d.get("framework", ""),
                     "dtype": d.get("dtype", ""), "reason": d.get("reason", ""), "measured": d.get("measured", ""),
                     "bound": d.get("bound", ""), "cases_inside": cases, "rows_explained": explained, STALE: stale})
    return pd.DataFrame(rows, columns=["divergence", "layer", "framework", "dtype", "reason", "measured", "bound",
                                       "cases_inside", "rows_explained", STALE])


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


# The columns a reader needs first, then the rest.
CHECK_COLUMNS = ["layer", "framework", "dtype", "kind", "name", "status", "err/atol", "max_abs_err", "atol",
                 "rtol", "err_eps", "detail", "reproduce", "divergence", "condition", "max_rel_err", "shape",
                 "reference", "attrs"]


def checks(df: pd.DataFrame, reproduce: bool = True) -> pd.DataFrame:
    """One line per check, CHECK_COLUMNS with its error in units of atol; without the reproduction if not
    ``reproduce``."""
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
    return by_family(groups, layer_families(bad), "framework", "dtype", "status")[cols]


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
    """One tensor's lost digits in words: its ``limit`` worst ranges of the input (a count, for a tensor with
    no input of its shape)."""
    if name is None:
        r = runs[0]
        return f"{label}: {r['n']} element(s) lost digits, up to {r['worst']:.3g} ulps"
    parts = []
    for r in sorted(runs, key=lambda r: -r["worst"])[:limit]:
        span = (f"{name} = {r['from']:.6g}" if r["from"] == r["to"] else f"{name} in [{r['from']:.6g}, {r['to']:.6g}]")
        kept = [f"{v:.6g}" for v in (r["kept_below"], r["kept_above"]) if v is not None]
        returns = f" return {r['returns']:.9g}" if r["returns"] is not None else ""
        parts.append(f"{span}: {r['n']} element(s)" + returns + f", up to {r['worst']:.3g} ulps" + _zeros(name, r)
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
    return by_family(pd.DataFrame(out), layer_families(df), "framework", "dtype")[cols]


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
    return by_family(out, layer_families(df), "dtype", "tensor")[cols]


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
    return by_family(pd.DataFrame(rows, columns=cols[1:]), layer_families(df), "framework", "dtype")[cols]


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
    return by_family(pd.DataFrame(rows, columns=cols[1:]), layer_families(df), "framework", "dtype")[cols]


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


# ---- whole models: the first divergent layer, and the gradient's health through depth


def step_index(name: str) -> int:
    """The index of a model step's row name ("12:conv2d" -> 12; a parameter "3:dense.W" -> 3)."""
    head, _, _ = str(name).partition(":")
    return int(head) if head.isdigit() else -1


def health_ratio(rows: pd.DataFrame) -> float:
    """Of one case's cotangent rows (kind "cot"): the oracle's gradient norm arriving at the
    first layer over the one arriving at the last layer before the loss (below 1: it vanishes
    on its way back; above 1: it grows)."""
    cot = rows[rows["kind"] == "cot"].assign(_i=rows["name"].map(step_index)).sort_values("_i")
    if len(cot) < 3:
        return float("nan")
    last = cot["reference_norm"].iloc[-2]  # the loss's own cotangent is 1 by construction
    return float(cot["reference_norm"].iloc[0] / last) if last > 0 else float("nan")


def model_table(df: pd.DataFrame) -> pd.DataFrame:
    """Per model x framework x dtype: the cases, those that did not pass, where they first diverged
    (``first_divergence`` counted over cases, most frequent first), the known divergences that
    explained them, and the gradient's health in the deepest case (health_ratio)."""
    cols = ["layer", "framework", "dtype", "cases", "cases not passing", "first divergence (cases)",
            "explained by", "deepest case", "gradient first / last layer (oracle)"]
    models = df[df["family"] == "models"]
    out = []
    for (layer, fw, dt), g in models.groupby(GROUP_KEY, sort=True):
        bad = g[g["status"] != "pass"]
        first = bad[bad["first_divergence"] != ""].drop_duplicates("case")["first_divergence"].value_counts()
        explained = sorted(set(bad.loc[bad["status"] == "known_divergence", "divergence"]) - {""})
        depth = g[g["kind"] == "cot"].groupby("case")["name"].nunique()
        deepest = depth.idxmax() if len(depth) else ""
        out.append({"layer": layer, "framework": fw, "dtype": dt, "cases": g["case"].nunique(),
                    "cases not passing": bad["case"].nunique(),
                    "first divergence (cases)": ", ".join(f"{k} x{v}" for k, v in first.items()),
                    "explained by": ", ".join(explained), "deepest case": deepest,
                    "gradient first / last layer (oracle)": health_ratio(g[g["case"] == deepest]) if deepest
                    else float("nan")})
    return pd.DataFrame(out, columns=cols)


# ---- execution modes


def modes_table(df: pd.DataFrame) -> pd.DataFrame:
    """Per layer x framework x dtype of a compiled mode: its verdict's counts, the worst error against the
    oracle (err_eps) and the worst distance from the same framework's eager result (vs_eager_eps, a measure)."""
    cols = ["family", "layer", "framework", "mode", "dtype", "checks", "not passing", "worst err_eps",
            "worst vs_eager_eps"]
    compiled = df[df["mode"].fillna("eager") != "eager"]
    if compiled.empty:
        return pd.DataFrame(columns=cols)
    out = compiled.groupby(GROUP_KEY, sort=False).agg(
        mode=("mode", "first"), checks=("status", "size"),
        bad=("status", lambda s: int((s != "pass").sum())), worst=("err_eps", "max"),
        apart=("vs_eager_eps", "max")).reset_index()
    out = out.rename(columns={"bad": "not passing", "worst": "worst err_eps", "apart": "worst vs_eager_eps"})
    return by_family(out, layer_families(compiled), "framework", "dtype")[cols]

