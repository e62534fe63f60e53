"""Version drift: report directories from different framework versions side by side.

    gradparity drift DIR [DIR ...] --out DIR

Each DIR is a report directory (say one per tox environment: tf219, tf220,
tf221), named in the output by its folder name. Per layer x framework x dtype,
drift.csv and drift.html show each input's framework version, verdict, worst
error (err_eps), convention and the known divergences that explained checks,
side by side in the order given. Each input is compared with the one before it;
a change of verdict (a group missing from an input reads "absent"),
convention or known divergence, or a worst error that grew or shrank by more
than a factor of FACTOR, is a change: highlighted, listed first, with the cases
behind it (the checks whose status changed, or the worst check on each side).
Errors below one eps count as one eps, so noise in the last bit is not drift.
Like the report, the page shows only what the inputs recorded, every string
escaped; CSV formula cells are neutralized.
"""

from __future__ import annotations

import html
import json
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from .files import ReportError, csv_text, directories_command, frame, read_rows, report_dirs, write_atomically
from .html import COLOURS, SORT_SCRIPT, STYLE
from .rows import GROUP_KEY, ROW_KEY
from .tables import by_family, layer_families, summarize

FACTOR = 4.0
ERR_FLOOR = 1.0  # err_eps below this counts as this
ABSENT = "absent"
MAX_BEHIND = 5  # cases listed per change
FIELDS = ("version", "verdict", "worst err_eps", "convention", "divergences")


@dataclass
class Drift:
    text: str
    table: pd.DataFrame
    warnings: list = field(default_factory=list)


def _labels(inputs: list[Path]) -> list[str]:
    """Folder names, made unique with a counter where two are the same."""
    names = [d.resolve().name or str(d) for d in inputs]
    return [n if names.count(n) == 1 else f"{n} ({i + 1})" for i, n in enumerate(names)]


def _groups(df: pd.DataFrame) -> pd.DataFrame:
    """Per group: version, verdict, worst err_eps, convention and the divergences that explained checks."""
    summary = summarize(df).set_index(GROUP_KEY)
    kd = df[df["status"] == "known_divergence"]
    divs = kd.groupby(GROUP_KEY)["divergence"].agg(lambda s: ", ".join(sorted(set(s) - {""})))
    out = pd.DataFrame({"version": summary["framework_version"], "verdict": summary["verdict"],
                        "worst err_eps": summary["worst_err_eps"], "convention": summary["convention"]})
    out["divergences"] = divs.reindex(out.index).fillna("")
    return out


def _describe(row) -> str:
    return f"{row.case} ({row.kind} {row.name}): {row.status}"


def _behind_status(a: pd.DataFrame, b: pd.DataFrame, la: str, lb: str) -> list[str]:
    """The checks of one group whose status (or divergence) differs between two inputs."""
    key = [k for k in ROW_KEY if k not in GROUP_KEY]
    joined = a[key + ["status", "divergence"]].merge(b[key + ["status", "divergence"]], on=key, how="outer",
                                                        suffixes=("_a", "_b"), indicator=True)
    joined[["status_a", "status_b"]] = joined[["status_a", "status_b"]].fillna(ABSENT)
    joined[["divergence_a", "divergence_b"]] = joined[["divergence_a", "divergence_b"]].fillna("")
    diff = joined[(joined["status_a"] != joined["status_b"]) | (joined["divergence_a"] != joined["divergence_b"])]
    lines = [f"{r.case} ({r.kind} {r.name}): {r.status_a}{f' [{r.divergence_a}]' if r.divergence_a else ''} in {la}"
             f" -> {r.status_b}{f' [{r.divergence_b}]' if r.divergence_b else ''} in {lb}"
             for r in diff.head(MAX_BEHIND).itertuples()]
    if len(diff) > MAX_BEHIND:
        lines.append(f"and {len(diff) - MAX_BEHIND} more checks")
    return lines


def _worst(rows: pd.DataFrame, label: str) -> str:
    finite = rows[np.isfinite(rows["err_eps"])]
    if finite.empty:
        return f"no finite error in {label}"
    r = finite.loc[finite["err_eps"].idxmax()]
    return f"worst in {label}: {r['case']} ({r['kind']} {r['name']}) err_eps {r['err_eps']:.3g}"


def _error_ratio(a, b) -> float:
    if not (np.isfinite(a) and np.isfinite(b)):
        return np.nan
    return max(b, ERR_FLOOR) / max(a, ERR_FLOOR)


def compare(frames: list[pd.DataFrame], labels: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The side-by-side table (one row per group) and, beside it, which of its cells changed."""
    groups = [_groups(df) for df in frames]
    index = sorted(set().union(*(g.index for g in groups)))
    by_group = [{k: part for k, part in df.groupby(GROUP_KEY)} for df in frames]
    table = pd.DataFrame(index=pd.MultiIndex.from_tuples(index, names=GROUP_KEY))
    for g, label in zip(groups, labels):
        g = g.reindex(table.index)
        g["verdict"] = g["verdict"].fillna(ABSENT)
        g[["version", "convention", "divergences"]] = g[["version", "convention", "divergences"]].fillna("")
        for f in FIELDS:
            table[f"{label} {f}"] = g[f]
    changed = pd.DataFrame(False, index=table.index, columns=table.columns)
    changes, behind = [], []
    for key in table.index:
        what, why = [], []
        for i in range(1, len(labels)):
            la, lb = labels[i - 1], labels[i]
            a, b = (table.loc[key, f"{la} {f}"] for f in FIELDS[1:]), (table.loc[key, f"{lb} {f}"] for f in FIELDS[1:])
            (va, ea, ca, da), (vb, eb, cb, db) = a, b
            ra, rb = by_group[i - 1].get(key), by_group[i].get(key)
            empty = frames[i].iloc[:0]
            ra = empty if ra is None else ra
            rb = empty if rb is None else rb
            status_changed = False
            if va != vb:
                what.append(f"verdict {va} ({la}) -> {vb} ({lb})")
                changed.loc[key, [f"{la} verdict", f"{lb} verdict"]] = True
                status_changed = True
            if ca != cb:
                what.append(f"convention {ca or '(none)'} ({la}) -> {cb or '(none)'} ({lb})")
                changed.loc[key, [f"{la} convention", f"{lb} convention"]] = True
            if da != db:
                what.append(f"known divergence {da or '(none)'} ({la}) -> {db or '(none)'} ({lb})")
                changed.loc[key, [f"{la} divergences", f"{lb} divergences"]] = True
                status_changed = True
            ratio = _error_ratio(ea, eb)
            if np.isfinite(ratio) and not 1 / FACTOR <= ratio <= FACTOR:
                what.append(f"worst err_eps x{ratio:.3g}: {ea:.3g} ({la}) -> {eb:.3g} ({lb})")
                changed.loc[key, [f"{la} worst err_eps", f"{lb} worst err_eps"]] = True
                why += [_worst(ra, la), _worst(rb, lb)]
            if status_changed:
                why += _behind_status(ra, rb, la, lb)
        changes.append("; ".join(what))
        behind.append("; ".join(dict.fromkeys(why)))
    table.insert(0, "changes", changes)
    table["behind"] = behind
    changed.insert(0, "changes", [bool(c) for c in changes])
    changed["behind"] = False
    table, changed = table.reset_index(), changed.reset_index(drop=True)
    for k in GROUP_KEY:
        changed.insert(GROUP_KEY.index(k), k, False)
    families = {k: v for df in frames for k, v in layer_families(df).items()}  # the last input's, should two differ
    order = by_family(table.assign(_i=range(len(table))), families, "framework", "dtype")
    first = order.assign(_c=order["changes"] == "").sort_values("_c", kind="stable")  # changed groups first
    table = first.drop(columns=["_c", "_i"]).reset_index(drop=True)
    changed = changed.iloc[first["_i"].to_numpy()].reset_index(drop=True)
    changed.insert(0, "family", False)
    return table, changed


def _view(table: pd.DataFrame, changed: pd.DataFrame, labels: list[str]):
    """The page's columns: per report its verdict (with the framework version), worst err_eps, and notes
    (convention; known divergences), so three versions fit the page's width; the CSV keeps every field apart."""
    view = table[["family", *GROUP_KEY, "changes"]].copy()
    flags = changed[["family", *GROUP_KEY, "changes"]].copy()
    colours = pd.DataFrame("", index=table.index, columns=[])
    for label in labels:
        version = table[f"{label} version"].astype(str)
        verdict = table[f"{label} verdict"].astype(str)
        view[f"{label} verdict"] = verdict + np.where(version != "", " (" + version + ")", "")
        view[f"{label} worst err_eps"] = table[f"{label} worst err_eps"]
        notes = table[[f"{label} convention", f"{label} divergences"]].astype(str)
        view[f"{label} notes"] = [("; ".join(n for n in pair if n)) for pair in notes.itertuples(index=False)]
        flags[f"{label} verdict"] = changed[f"{label} verdict"]
        flags[f"{label} worst err_eps"] = changed[f"{label} worst err_eps"]
        flags[f"{label} notes"] = changed[f"{label} convention"] | changed[f"{label} divergences"]
        colours[f"{label} verdict"] = verdict.map(lambda v: f"background-color: {COLOURS.get(v, '#ffffff')}")
    view["behind"], flags["behind"] = table["behind"], False
    if all((view[f"{label} notes"] == "").all() for label in labels):  # nothing recorded anywhere
        view = view.drop(columns=[f"{label} notes" for label in labels])
        flags = flags[view.columns]
    return view, flags, colours.reindex(columns=view.columns, fill_value="")


def _html_table(table: pd.DataFrame, changed: pd.DataFrame, labels: list[str]) -> str:
    if table.empty:
        return "<p>None.</p>"
    view, flags, colours = _view(table, changed, labels)
    fmt = {c: "{:.3g}" for c in view.columns if view[c].dtype.kind == "f"}
    styler = (view.style.hide(axis="index").format(fmt, na_rep="", escape="html")
              .set_table_attributes('class="grid wide sortable drift"'))
    classes = pd.DataFrame(np.where(flags.to_numpy(dtype=bool), "changed", ""), index=view.index,
                           columns=view.columns)
    for col in ["layer", "changes", "behind"] + [c for c in view.columns if c.endswith(" notes")]:
        classes[col] = (classes[col] + " long").str.strip()
    return styler.set_td_classes(classes).apply(lambda _: colours, axis=None).to_html()


def _page(table: pd.DataFrame, changed: pd.DataFrame, labels: list[str], inputs: list[Path]) -> str:
    moved = table["changes"] != ""
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    sources = "".join(f"<li><strong>{html.escape(label)}</strong>: <code>{html.escape(str(d))}</code></li>"
                      for label, d in zip(labels, inputs))
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>gradparity drift</title>
<style>{STYLE}
td.changed{{outline:3px solid #c00000;outline-offset:-3px;font-weight:600}}</style></head><body>
<h1>gradparity: drift across framework versions</h1>
<p>{len(table)} layer x framework x dtype groups over {len(labels)} reports; {int(moved.sum())} changed; {stamp}.</p>
<ol>{sources}</ol>
<p>Each report is compared with the one before it. A change of verdict, convention or known divergence, or a worst
error (err_eps, errors below {ERR_FLOOR:g} eps counted as {ERR_FLOOR:g}) that moved by more than a factor of
{FACTOR:g}, is outlined in red and named in <em>changes</em>; <em>behind</em> lists the cases behind it: the checks
whose status changed, or the worst check on each side. Click a column heading to sort.</p>
<nav class="toc" id="contents"><strong>Contents</strong><ol><li><a href="#changed">Groups that changed</a></li>
<li><a href="#all">Every group</a></li></ol></nav>
<h2 id="changed">Groups that changed ({int(moved.sum())})</h2>
{_html_table(table[moved].reset_index(drop=True), changed[moved.to_numpy()].reset_index(drop=True), labels)}
<h2 id="all">Every group</h2>
{_html_table(table, changed, labels)}
<script>{SORT_SCRIPT}</script>
</body></html>"""


def _partial(directory: Path) -> bool:
    try:
        return bool(json.loads((directory / "meta.json").read_text(encoding="utf-8"))["run"]["partial"])
    except (OSError, ValueError, KeyError, TypeError):
        return False


def drift(inputs: list[Path], out: Path) -> Drift:
    """drift.csv and drift.html in ``out`` from the report directories ``inputs`` (see the module docstring)."""
    inputs = report_dirs(inputs)
    if len(inputs) < 2:
        raise ReportError("drift compares two or more report directories")
    labels = _labels(inputs)
    frames = [frame(read_rows(d)) for d in inputs]
    table, changed = compare(frames, labels)
    files = {"drift.csv": csv_text(table), "drift.html": _page(table, changed, labels, inputs)}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        write_atomically(out / name, text)
    moved = int((table["changes"] != "").sum())
    warnings = [f"{label} ({d}) is a partial report: groups it did not finish read as absent"
                for label, d in zip(labels, inputs) if _partial(d)]
    return Drift(f"{len(table)} groups over {len(labels)} reports ({', '.join(labels)}), {moved} changed; "
                 f"written to {out}/", table, warnings)


def main(argv=None, prog: str = "gradparity drift") -> int:
    return directories_command(argv, prog, __doc__.splitlines()[0], drift, "report directories, oldest version first",
                               "directory for drift.csv and drift.html")


if __name__ == "__main__":
    sys.exit(main())
