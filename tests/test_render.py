"""The report files: schema and counts, merging with recorded notes, escaping, CSV
neutralization, atomic writes, partial runs, and not_applicable groups."""

import json
import os
import re
import subprocess
import sys
from html.parser import HTMLParser

import pandas as pd
import pytest

from gradparity.reference import LAYERS
from gradparity.reports import files
from gradparity.reports.files import MANIFEST, frame, read_rows
from gradparity.reports.html import COLOURS, SORT_SCRIPT
from gradparity.reports.merge import main as merge_main
from gradparity.reports.merge import merge
from gradparity.reports.plots import gradient_flow
from gradparity.reports.render import write_report
from gradparity.reports.rows import COLUMNS, NUMERIC, STATUSES
from gradparity.reports.tables import PARTLY_NA, step_table

FILES = {"gradients.csv", "summary.csv", "report.html", "checks.html", "meta.json", MANIFEST}
PLOT_FILES = {"plots/errors.png"}  # written when some check has a finite error
NOTES = {"conventions": [{"layer": "relu", "framework": "torch", "convention": "relu'(0)=0",
                          "reason": "recorded: torch routes the kink to 0"}],
         "divergences": [{"key": "tf-elu-expm1", "layer": "elu", "framework": "tensorflow", "dtype": "float32",
                          "reason": "recorded: expm1 vs exp-1", "measured": "3 ulp", "bound": "any error"}]}


def row(**overrides):
    """A passing gradient check with every column; override what a test is about. Its family is its layer's
    in the catalogue, "other" for a layer not there (as compare.check records it)."""
    layer = overrides.get("layer", "relu")
    base = {"family": LAYERS[layer].family if layer in LAYERS else "other",
            "layer": "relu", "framework": "torch", "framework_version": "9.9", "reference": "oracle",
            "dtype": "float64", "case": "a", "kind": "grad", "name": "x", "shape": "(2,)",
            "max_abs_err": 1e-12, "max_rel_err": 1e-12, "err_eps": 4.5e3, "scale": 1.0, "condition": 1.0,
            "atol": 1e-10, "rtol": 1e-10, "status": "pass", "detail": "", "convention": "", "divergence": "",
            "tolerance_reason": "default", "attrs": "relu[float64](x(2,))", "reproduce": "", "profile": "",
            "max_ulp_err": 0.5, "ulp_where": "at (0,), x=1, got 0.5, exact 0.5", "precision": "ok",
            "ulp_oracle": "mpmath at 128 and 256 bits; measured 2 of 2", "ulp_lost": "", "special": "",
            "nonfinite": "", "flushed": "", "edges": "", "example": "", "first_divergence": "",
                "norm": "", "reference_norm": "", "mode": "eager", "vs_eager_eps": ""}
    assert set(base) == set(COLUMNS)
    return {**base, **overrides}


class Page(HTMLParser):
    """The tags, the text (style sheets and scripts left out), the scripts, and the h2 headings of a page."""

    def __init__(self, text):
        super().__init__()
        self.tags, self.text, self.headings, self.scripts, self._tag = [], [], [], [], None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self._tag = tag

    def handle_endtag(self, tag):
        self._tag = None

    def handle_data(self, data):
        if self._tag == "script":
            self.scripts.append(data)
        if self._tag in ("style", "script"):
            return
        self.text.append(data)
        if self._tag == "h2":
            self.headings.append(data)


def section(page: str, heading: str) -> str:
    """The raw HTML from one h2 heading (not its entry in the contents) to the next h2."""
    start = re.search(r"<h2[^>]*>" + re.escape(heading), page).end()
    end = page.find("<h2", start)
    return page[start:end if end >= 0 else None]


def no_temp_files(directory):
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*")
                  if p.is_file() and str(p.relative_to(directory)) not in FILES | PLOT_FILES) == []


def test_report_files_have_the_schema_and_count_statuses(tmp_path):
    rows = [row(), row(kind="out", name="y"), row(case="b", status="fail", max_rel_err=1e-3,
                                                  reproduce="python -m gradparity.reports.replay b.npz"),
            row(case="c", layer="dense", status="error", max_rel_err=float("nan")),
            row(case="c", framework="tensorflow"),
            row(case="c", layer="dense", name="W", status="known_divergence", divergence="tf-elu-expm1")]
    written = write_report(rows + [row()], tmp_path, notes=NOTES)  # a repeated ROW_KEY counts once
    assert set(p.name for p in tmp_path.iterdir()) == FILES | {"plots"} and written.path == tmp_path
    assert {str(p.relative_to(tmp_path)) for p in (tmp_path / "plots").iterdir()} == PLOT_FILES
    grads = pd.read_csv(tmp_path / "gradients.csv")
    assert list(grads.columns) == COLUMNS and len(grads) == 6
    summary = pd.read_csv(tmp_path / "summary.csv").set_index(["layer", "framework"])
    assert {"checked", *STATUSES} <= set(summary.columns)
    assert summary.loc[("relu", "torch"), "cases"] == 2 and summary.loc[("relu", "torch"), "checks"] == 3
    assert summary.loc[("relu", "torch"), "fail"] == 1 and summary.loc[("relu", "torch"), "verdict"] == "fail"
    assert summary.loc[("dense", "torch"), "error"] == 1 and summary.loc[("dense", "torch"), "known_divergence"] == 1
    assert summary.loc[("relu", "tensorflow"), "verdict"] == "pass"
    assert json.loads((tmp_path / "meta.json").read_text()) == {
        "notes": NOTES, "run": {"partial": False, "missing": [], "why": ""}}
    page = (tmp_path / "report.html").read_text()
    assert "python -m gradparity.reports.replay b.npz" in page and "partial" not in " ".join(Page(page).text)
    assert written.text.startswith("6 checks") and no_temp_files(tmp_path)


def test_merge_keeps_each_row_once_and_carries_the_recorded_notes(tmp_path, capsys):
    first, second, out = tmp_path / "shard1", tmp_path / "shard2", tmp_path / "merged"
    later = {"conventions": [{**NOTES["conventions"][0], "reason": "recorded later: still 0"}], "divergences": []}
    write_report([row(), row(case="b")], first, notes=NOTES)
    write_report([row(case="b", status="fail", max_rel_err=1.0), row(case="c")], second, notes=later)
    assert merge_main([str(first), str(second), "--out", str(out)]) == 0
    merged = read_rows(out)
    assert sorted(merged["case"]) == ["a", "b", "c"]
    assert merged.set_index("case").loc["b", "status"] == "fail"  # the later input wins
    notes = json.loads((out / "meta.json").read_text())["notes"]
    assert notes == {"conventions": later["conventions"], "divergences": NOTES["divergences"]}
    page = (out / "report.html").read_text()
    assert "recorded later: still 0" in page and "recorded: expm1 vs exp-1" in page
    assert "recorded: torch routes" not in page

    # Merging into one of the inputs reads it before writing over it.
    assert merge_main([str(first), str(second), "--out", str(first)]) == 0
    assert sorted(read_rows(first)["case"]) == ["a", "b", "c"] and no_temp_files(first)


def test_merge_upgrades_an_old_report_without_notes_and_warns(tmp_path, capsys):
    old, new, out = tmp_path / "old", tmp_path / "new", tmp_path / "out"
    old.mkdir()
    legacy = [{k: v for k, v in row(case=c).items() if k not in ("reference", "kind", "name")} | {"tensor": t}
              for c, t in [("a", "out"), ("a", "W")]]
    pd.DataFrame(legacy).to_csv(old / "gradients.csv", index=False)
    write_report([row(case="z")], new, notes=NOTES)
    assert merge_main([str(old), str(new), "--out", str(out)]) == 0
    assert "old has no meta.json" in capsys.readouterr().err
    merged = read_rows(out).set_index("case")
    assert sorted(zip(merged["kind"], merged["name"], merged["reference"])) == [
        ("grad", "W", "oracle"), ("grad", "x", "oracle"), ("out", "y", "oracle")]


def test_merge_rejects_missing_inputs_in_one_line(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert merge_main([str(tmp_path / "nope"), str(empty), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "nope (no such directory)" in err and "empty (no gradients.csv)" in err
    assert not (tmp_path / "out").exists()


def test_merge_of_a_partial_input_is_partial(tmp_path):
    done, cut, out = tmp_path / "done", tmp_path / "cut", tmp_path / "out"
    write_report([row()], done)
    write_report([row(case="b")], cut, run={"partial": True, "missing": ["t[dense-torch]"], "why": "a worker crashed"})
    with pytest.raises(files.ReportError, match="partial report is in .*cut/partial"):
        merge([done, cut], out)
    written = merge([done, cut / "partial"], out)
    assert written.text.startswith("partial:") and written.path == out / "partial"
    run = json.loads((out / "partial" / "meta.json").read_text())["run"]
    assert run["partial"] and run["missing"] == ["t[dense-torch]"] and "a worker crashed" in run["why"]


def test_render_reads_no_current_tables(tmp_path):
    """A report must show what its run recorded, so the report's modules never import the live tables: the
    catalogue, adapters, tolerances, divergences or compare (not even to write a report of current rows)."""
    code = ("import sys, gradparity.reports.render, gradparity.reports.merge, gradparity.reports.html, "
            "gradparity.reports.tables, gradparity.reports.files, gradparity.reports.__main__; "
            f"gradparity.reports.render.write_report([{row()!r}], {str(tmp_path)!r}); "
            "print([m for m in sys.modules if m.startswith(('gradparity.reference', 'gradparity.adapters', "
            "'gradparity.reports.tolerances', 'gradparity.reports.divergences', 'gradparity.reports.compare'))])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stderr[-2000:]


def test_every_string_from_the_data_is_escaped(tmp_path):
    script, bold = "<script>alert(1)</script>", "<b>x</b>"
    notes = {"conventions": [{"layer": script, "framework": "torch", "convention": bold, "reason": script}],
             "divergences": [{"key": bold, "layer": script, "framework": "torch", "dtype": "float64",
                              "reason": script, "measured": bold, "bound": "any error"}]}
    hostile = {"layer": script, "family": '">' + bold}  # a family that would close an attribute
    rows = [row(**hostile, attrs=bold, detail=script, framework_version=bold),
            row(**hostile, framework=bold, case="b", status="fail", detail=bold, reproduce=script),
            row(**hostile, case="c", name="W", status="not_applicable", detail=script),
            row(**hostile, case="d", status="known_divergence", divergence=bold, convention=script)]
    written = write_report(rows, tmp_path, notes=notes, run={"partial": True, "missing": [script], "why": bold})
    raw = (written.path / "report.html").read_text()  # a partial report goes to partial/
    page = Page(raw)
    assert page.tags.count("script") == 1 and page.scripts == [SORT_SCRIPT]  # the page's own, only
    assert "b" not in page.tags
    text = "".join(page.text)
    assert script in text and bold in text and "&lt;script&gt;" in raw
    headings = ["At a glance", "Summary", "Conventions", "Known divergences", "Checks that were not applicable",
                "Every check that did not pass", "The 40 largest errors that passed"]
    assert all(any(h.startswith(want) for h in page.headings) for want in headings), page.headings
    assert script in "".join(Page(section(raw, "At a glance")).text)  # the grid's index, escaped


def test_csv_cells_are_neutralized_and_read_back_exactly(tmp_path):
    nasty = ["=1+1", "-x", "'quoted", "@a", "+1", "\tTab", "\rcr", "plain", "", 'a,b\n"c"', "=cmd|' /C calc'!A0"]
    rows = [row(case=f"c{i}", detail=s, attrs=s, layer=s or "relu", scale=-0.5) for i, s in enumerate(nasty)]
    write_report(rows, tmp_path)
    for name in ("gradients.csv", "summary.csv"):
        raw = pd.read_csv(tmp_path / name, dtype=str, keep_default_na=False)
        text = raw.drop(columns=[c for c in raw.columns if c in NUMERIC or c in STATUSES + ("cases", "checks",
                                                                                           "checked")])
        assert not text.map(lambda v: v.startswith(("=", "+", "-", "@", "\t", "\r"))).any().any(), name
    raw = pd.read_csv(tmp_path / "gradients.csv", dtype=str, keep_default_na=False)
    assert set(raw["scale"]) == {"-0.5"} and "'-x" in set(raw["detail"])
    back = read_rows(tmp_path)
    assert list(back.columns) == COLUMNS and back["scale"].dtype.kind == "f"
    pd.testing.assert_frame_equal(frame(back), frame(rows), check_dtype=False)


def test_files_are_replaced_atomically(tmp_path, monkeypatch):
    replaced, real_replace = [], os.replace
    monkeypatch.setattr(files.os, "replace", lambda src, dst: (replaced.append((src, dst)), real_replace(src, dst)))
    write_report([row()], tmp_path)
    assert sorted(os.path.basename(dst) for _, dst in replaced) == sorted(FILES | {"errors.png"})
    assert all(os.path.dirname(src) == os.path.dirname(dst) for src, dst in replaced)
    assert no_temp_files(tmp_path)
    monkeypatch.undo()

    before = {p.relative_to(tmp_path): p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_csv", fail)  # the serializer fails
    with pytest.raises(OSError):
        write_report([row(case="new")], tmp_path)
    monkeypatch.undo()
    monkeypatch.setattr(files.os, "replace", fail)  # the rename fails, after a temp file was written
    with pytest.raises(OSError):
        write_report([row(case="new")], tmp_path)
    assert {p.relative_to(tmp_path): p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before


def test_a_partial_run_never_replaces_a_report(tmp_path):
    write_report([row(), row(case="b")], tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    missing = [f"tests/test_gradients.py::test_gradient[layer{i}-torch-float64]" for i in range(30)]
    written = write_report([row()], tmp_path, run={"partial": True, "missing": missing, "why": "interrupted (Ctrl-C)"})
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before
    assert written.path == tmp_path / "partial" and written.text.startswith("partial:")
    assert "left untouched" in written.text
    page = Page((tmp_path / "partial" / "report.html").read_text())
    text = " ".join(page.text)
    assert "(partial)" in text and "interrupted (Ctrl-C)" in text and "layer0-torch" in text
    assert "layer29-torch" not in text and "and 20 more" in text  # a long list is cut short

    # Always partial/, even with nothing to protect: where a run's report lands never depends on what was there.
    fresh = tmp_path / "fresh"
    written = write_report([row()], fresh, run={"partial": True, "missing": [], "why": "a worker crashed"})
    assert written.path == fresh / "partial" and "partial" in (fresh / "partial" / "report.html").read_text()
    assert "left untouched" not in written.text

    # The complete report of the next run retires partial/.
    write_report([row()], fresh)
    assert not (fresh / "partial").exists() and (fresh / "report.html").is_file()


def test_groups_with_not_applicable_checks_do_not_read_as_pass(tmp_path):
    rows = ([row(case=str(i)) for i in range(2)]
            + [row(case=str(i), name="W", status="not_applicable", detail="relu has no W") for i in range(6)]
            + [row(layer="dense")]
            + [row(layer="dropout", status="not_applicable", detail="random mask")])
    write_report(rows, tmp_path)
    summary = pd.read_csv(tmp_path / "summary.csv").set_index("layer")
    assert summary.loc["relu", "verdict"] == PARTLY_NA
    assert (summary.loc["relu", "checks"], summary.loc["relu", "checked"]) == (8, 2)
    assert summary.loc["relu", "not_applicable"] == 6 and summary.loc["relu", "known_divergence"] == 0
    assert summary.loc["dense", "verdict"] == "pass" and summary.loc["dropout", "verdict"] == "not_applicable"
    page = (tmp_path / "report.html").read_text()
    assert "pass, 2 of 8 ran" in Page(section(page, "At a glance")).text
    na = "".join(Page(section(page, "Checks that were not applicable")).text)
    assert "relu has no W" in na and "random mask" in na
    assert "relu has no W" not in section(page, "Every check that did not pass")
    assert COLOURS[PARTLY_NA] != COLOURS["pass"]


def test_flow_rows_draw_the_gradient_flow_plot_and_old_reports_without_profiles_do_not(tmp_path):
    profile = json.dumps({"reference": [1e-3, 1e-2, 1e-1, 1.0], "candidate": [1e-3, 1e-2, 1e-1, 1.0]})
    flow = row(layer="rnn", kind="flow", shape="(4,)", profile=profile)
    write_report([row(), flow], tmp_path / "new")
    assert (tmp_path / "new" / "plots" / "gradient_flow.png").stat().st_size > 1000
    assert "Gradient flow through time" in (tmp_path / "new" / "report.html").read_text()
    old = pd.DataFrame([row(), flow]).drop(columns="profile")  # a report written before profiles existed
    assert gradient_flow(old) is None
    assert gradient_flow(pd.DataFrame([flow | {"profile": "not json"}])) is None


def test_training_rows_get_errors_per_step_and_the_recorded_defaults_which_a_merge_keeps(tmp_path):
    steps = [row(layer="sgd_step", kind="out", name=f"{n}@{t}", case=c, max_abs_err=t * 1e-12 * size, atol=1e-11)
             for t in (1, 2, 3) for c, size in (("a", 1.0), ("b", 0.5)) for n in ("w", "m")]
    notes = {"training": {"defaults": [{"item": "sgd_step", "setting": "lr", "torch": "1e-3", "keras": "0.01"}],
                          "gaps": [{"layer": "sgd_step", "convention": "defaults", "|g|~1: step 1": 0.022}]}}
    table = step_table(frame([row(), *steps]))  # the worst over cases and outputs, per step
    assert list(table.columns) == ["layer", "framework", "dtype", "step 1", "step 2", "step 3"]
    assert table.iloc[0, 3:].tolist() == ["0.1", "0.2", "0.3"] and len(table) == 1
    write_report([row(), *steps], tmp_path / "one", notes=notes)
    merge([tmp_path / "one"], tmp_path / "merged")
    for d in ("one", "merged"):
        page = (tmp_path / d / "report.html").read_text()
        section = page[page.index('id="training-steps"'):page.index('id="training-defaults"')]
        assert "step 3" in section and "0.3" in section  # the worst err / atol of step 3: 3e-12 / 1e-11
        assert "0.01" in page[page.index('id="training-defaults"'):]
    assert json.loads((tmp_path / "merged" / "meta.json").read_text())["notes"]["training"] == notes["training"]
