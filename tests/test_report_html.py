"""report.html read as a page (sections, contents, colours, escaping, plots, no
outside resources), the layer families, the errors-against-tolerance plot, and
``gradparity drift``."""

import base64
import configparser
import json
import re
import time
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gradparity.reference import LAYERS
from gradparity.reports import cli, plots
from gradparity.reports.drift import FACTOR, compare, drift
from gradparity.reports.files import frame
from gradparity.reports.html import COLOURS, MOSTLY_NA, SORT_SCRIPT, STYLE, checks_page
from gradparity.reports.render import write_report
from gradparity.reports.tables import FAMILY_ORDER, PARTLY_NA, STALE, layer_families

from .test_render import row

SECTIONS = ["glance", "plots", "summary", "coverage", "precision", "special", "training", "models", "modes",
            "conventions", "divergences", "not-applicable", "not-passing", "worst-passing"]
HOSTILE = '<script>alert(1)</script><img src=x onerror=alert(2)><b>'
PAGE_TAGS = {"html", "head", "meta", "title", "style", "body", "h1", "h2", "h3", "p", "code", "nav", "strong", "ol",
             "li", "a", "table", "thead", "tbody", "tr", "th", "td", "details", "summary", "figure", "img",
             "figcaption", "script", "em", "span", "ul", "wbr"}


class Page(HTMLParser):
    """Tags with their attributes, ids, in-page links, h2/h3 ids, scripts, style text, and every table's
    cells (text, id, class) with the h2 it stands under."""

    def __init__(self, text):
        super().__init__(convert_charrefs=True)
        self.tags, self.ids, self.links, self.h2, self.h3, self.scripts, self.style = [], set(), [], [], [], [], ""
        self.tables, self._stack, self._under, self._cell = [], [], None, None
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append((tag, attrs))
        self._stack.append(tag)
        if "id" in attrs:
            self.ids.add(attrs["id"])
        if tag == "a" and attrs.get("href", "").startswith("#"):
            self.links.append(attrs["href"][1:])
        if tag == "h2":
            self._under = attrs.get("id")
            self.h2.append(attrs.get("id"))
        if tag == "h3":
            self.h3.append(attrs.get("id"))
        if tag == "table":
            self.tables.append({"under": self._under, "class": attrs.get("class", ""), "head": [], "rows": []})
        if tag == "tr" and self.tables:
            self.tables[-1]["rows"].append([])
        if tag in ("td", "th") and self.tables:
            self._cell = {"tag": tag, "text": "", "id": attrs.get("id", ""), "class": attrs.get("class", "")}
            self.tables[-1]["rows"][-1].append(self._cell)

    def handle_endtag(self, tag):
        if tag in self._stack:
            while self._stack.pop() != tag:
                pass
        if tag in ("td", "th"):
            self._cell = None

    def handle_data(self, data):
        top = self._stack[-1] if self._stack else None
        if top == "script":
            self.scripts.append(data)
        elif top == "style":
            self.style += data
        elif self._cell is not None:
            self._cell["text"] += data

    def background(self):
        """Cell id -> background colour, from the style sheets pandas writes."""
        out = {}
        for selectors, body in re.findall(r"([^{}]+)\{([^}]*)\}", self.style):
            colour = re.search(r"background-color:\s*([^;]+)", body)
            for sel in selectors.split(","):
                if colour and sel.strip().startswith("#"):
                    out[sel.strip()[1:]] = colour.group(1).strip()
        return out

    def table(self, under: str, column_with: str | None = None):
        """A table under the h2 ``under`` (the first with a heading ``column_with``), as (head, body rows)."""
        for t in self.tables:
            head = [c["text"].strip() for c in t["rows"][0]] if t["rows"] else []
            if t["under"] == under and (column_with is None or column_with in head):
                return head, [r for r in t["rows"][1:] if r and all(c["tag"] == "td" for c in r)]
        raise AssertionError(f"no table under {under} with {column_with}")


def report_rows():
    """Rows of every kind a report shows: passes in several families, a failure, an error, a known divergence,
    a not-applicable check, an unknown layer, hostile strings from the data."""
    return ([row(layer=layer, framework=fw, dtype=dt, case=f"{layer}{i}", max_abs_err=10.0 ** -(i + 11))
             for layer in ("dense", "relu", "conv2d", "lstm") for fw in ("torch", "tensorflow")
             for dt in ("float32", "float64") for i in range(3)]
            + [row(layer="relu", case=f"f{i}", status="fail", max_abs_err=1e-6, detail=HOSTILE,
                   reproduce=f"gradparity replay f{i}.npz") for i in range(3)]
            + [row(layer="conv2d", case="e", status="error", max_abs_err=float("nan"), detail=HOSTILE)]
            + [row(layer="dense", case=f"k{i}", status="known_divergence", divergence="tf-kd", max_abs_err=1e-7,
                   framework="tensorflow") for i in range(2)]
            + [row(layer="dense", case="n", name="W", status="not_applicable", max_abs_err=float("nan"),
                   detail="no W here")]
            + [row(layer=HOSTILE, case="h", convention=HOSTILE, attrs=HOSTILE, framework_version=HOSTILE,
                   precision="lost", max_ulp_err=1e9, ulp_where=HOSTILE, ulp_oracle="mpmath",
                   ulp_lost=json.dumps({"input": HOSTILE, "n": 1, "lost": [[40.0, 1e9, 0.0]], "kept": [1.0]}))])


NOTES = {"conventions": [{"layer": "relu", "framework": "torch", "convention": HOSTILE, "reason": HOSTILE}],
         "divergences": [{"key": "tf-kd", "layer": "dense", "framework": "tensorflow", "dtype": "float64",
                          "reason": HOSTILE, "measured": HOSTILE, "bound": "any error"}]}


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    write_report(report_rows(), out, notes=NOTES)
    raw = (out / "report.html").read_text(encoding="utf-8")
    return out, raw, Page(raw)


def test_every_section_is_there_and_the_contents_link_to_it(report):
    _, _, page = report
    assert page.h2 == SECTIONS
    assert set(SECTIONS) <= set(page.links)  # every section is in the contents
    assert page.links and set(page.links) <= page.ids  # and every link lands on an anchor
    # layers grouped by family, in the family order, the unknown layer under "other"
    assert page.h3 == ["summary-dense", "summary-activations", "summary-convolution", "summary-recurrent",
                       "summary-other", "precision-worst", "precision-keeps",
                       "special-nonfinite", "special-subnormal"]
    grid = next(t for t in page.tables if t["under"] == "glance")
    families = [r[0]["text"] for r in grid["rows"] if r and "row_heading" in r[0]["class"]
                and "level0" in r[0]["class"]]
    assert families == ["dense", "activations", "convolution", "recurrent", "other"], families


def test_status_and_verdict_cells_are_coloured(report):
    _, _, page = report
    colour_of = page.background()
    seen = 0
    for t in page.tables:
        if not t["rows"]:
            continue
        head = [c["text"].strip() for c in t["rows"][0]]
        for col in [i for i, h in enumerate(head) if h in ("status", "verdict")]:
            for r in t["rows"][1:]:
                cell = r[col]
                assert colour_of.get(cell["id"]) == COLOURS[cell["text"]], (t["under"], cell)
                seen += 1
    assert seen >= 20
    grid = next(t for t in page.tables if t["under"] == "glance")
    cells = [c for r in grid["rows"] for c in r if c["tag"] == "td" and c["text"]]
    assert cells and all(colour_of.get(c["id"], "").startswith("#") for c in cells)


def test_no_markup_from_the_data_and_nothing_from_outside(report):
    _, raw, page = report
    assert {tag for tag, _ in page.tags} <= PAGE_TAGS
    assert page.scripts == [SORT_SCRIPT] and [t for t, _ in page.tags].count("script") == 1
    assert not any(k.startswith("on") for _, attrs in page.tags for k in attrs)
    assert [a.get("src", "")[:22] for t, a in page.tags if t == "img"] == ["data:image/png;base64,"]
    assert not any(v and re.match(r"(https?:)?//", v) for _, a in page.tags for k, v in a.items()
                   if k in ("src", "href"))
    assert HOSTILE in "".join(c["text"] for t in page.tables for r in t["rows"] for c in r)
    assert "&lt;script&gt;" in raw


def test_the_plot_is_inline_and_written_beside_the_page(report):
    out, _, page = report
    src = next(a["src"] for t, a in page.tags if t == "img")
    png = base64.b64decode(src.split(",", 1)[1])
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert (out / "plots" / "errors.png").read_bytes() == png


def test_not_passing_checks_are_grouped_with_counts(report):
    _, _, page = report
    head, body = page.table("not-passing", "checks")
    lines = [{h: c["text"] for h, c in zip(head, r)} for r in body]
    relu = [x for x in lines if x["layer"] == "relu"]
    assert len(relu) == 1 and relu[0]["checks"] == "3" and relu[0]["cases"] == "3"
    assert relu[0]["reproduce (worst)"].startswith("gradparity replay f")
    dense = [x for x in lines if x["layer"] == "dense"]
    assert len(dense) == 1 and dense[0]["divergence"] == "tf-kd" and dense[0]["checks"] == "2"
    assert {x["status"] for x in lines} == {"fail", "error", "known_divergence"}
    _, na = page.table("not-applicable")
    assert any("no W here" in c["text"] for r in na for c in r)


def test_long_tables_wrap_and_sort(report):
    _, _, page = report
    for under in ("summary", "not-passing", "worst-passing", "conventions"):
        assert any(t["under"] == under and {"wide", "sortable"} <= set(t["class"].split()) for t in page.tables)
    assert "table.wide{width:100%}" in page.style and "overflow-wrap:anywhere" in page.style
    detail = page.table("not-passing", "detail (worst)")
    col = detail[0].index("detail (worst)")
    assert all("long" in r[col]["class"].split() for r in detail[1])
    assert "click" in SORT_SCRIPT and "sortable" in SORT_SCRIPT


def test_the_report_groups_layers_by_the_family_their_rows_name(tmp_path):
    """The family is the rows': a family FAMILY_ORDER does not name comes after the ones it does, alphabetically,
    and before "other"; rows from before the family column get their layer's family in the catalogue."""
    rows = [row(layer="relu"), row(layer="dense", family="activations", case="b"),  # the row's family, not the layer's
            row(layer="mine", family="my family", case="c"), row(layer="zeta", family="another", case="d"),
            row(layer="theirs", family="other", case="e")]
    write_report(rows, tmp_path)
    page = Page((tmp_path / "report.html").read_text(encoding="utf-8"))
    assert [h for h in page.h3 if h.startswith("summary-")] == [
        "summary-activations", "summary-another", "summary-my-family", "summary-other"]
    grid = next(t for t in page.tables if t["under"] == "glance")
    heads = [r[0] for r in grid["rows"] if r and {"row_heading", "level0"} <= set(r[0]["class"].split())]
    assert [h["text"] for h in heads] == ["activations", "another", "my family", "other"]
    assert set(page.links) <= page.ids

    old = pd.DataFrame([row(layer="lstm"), row(layer="a_users_own_layer", case="b")]).drop(columns="family")
    assert dict(zip(frame(old)["layer"], frame(old)["family"])) == {"lstm": "recurrent", "a_users_own_layer": "other"}
    assert frame([row(layer="lstm", family="")])["family"].tolist() == ["recurrent"]
    assert {layer.family for layer in LAYERS.values()} <= set(FAMILY_ORDER)  # every built-in family has its place


def test_the_plot_leaves_out_nan_errors_and_marks_the_pass_line():
    rows = frame([row(case=str(i), max_abs_err=e, status="fail" if e > 1e-10 else "pass")
                  for i, e in enumerate([1e-12, 0.0, float("nan"), 5e-10])]
                 + [row(case="na", status="not_applicable", max_abs_err=float("nan"))])
    fig = plots.errors_against_tolerance(rows)
    ax = fig.axes[0]
    points = np.concatenate([c.get_offsets() for c in ax.collections])
    assert len(points) == 3 + 1  # three finite errors, the failing one ringed again
    assert sorted(points[:3, 0]) == pytest.approx([plots.FLOOR, 1e-2, 5.0])
    assert any(list(line.get_xdata()) == [1.0, 1.0] for line in ax.lines)
    assert plots.errors_against_tolerance(frame([row(max_abs_err=float("nan"))])) is None
    two = frame([row(layer="dense"), row(layer="relu", case="b"), row(layer="lstm", case="c")])
    fig = plots.errors_against_tolerance(two, ["dense", "relu", "lstm"], layer_families(two).get)
    assert [t.get_text() for t in fig.axes[0].texts if t.get_text() in FAMILY_ORDER] == [
        "dense", "activations", "recurrent"]


def test_a_report_of_7000_rows_renders_quickly(tmp_path):
    rng = np.random.default_rng(0)
    layers = [f"layer{i}" for i in range(40)]
    rows = pd.DataFrame([row(layer=layers[i % 40], framework=("torch", "tensorflow")[i % 2],
                             dtype=("float32", "float64")[(i // 2) % 2], case=str(i)) for i in range(7000)])
    rows["max_abs_err"] = 10.0 ** rng.uniform(-14, -9, len(rows))
    start = time.perf_counter()
    write_report(rows, tmp_path)
    elapsed = time.perf_counter() - start
    assert elapsed < 6, elapsed  # about 1.5 s here; twice the 3 s aim leaves room for a loaded machine
    assert (tmp_path / "plots" / "errors.png").stat().st_size > 10_000


# --- drift -------------------------------------------------------------------------------------------


def versions(tmp_path):
    """Two report directories: relu's verdict changes, dense's worst error grows 10x, sigmoid's 1.5x (not
    drift), tanh's stays below one eps (noise), and elu's known divergence goes away."""
    def rows(version, relu_status, dense_err, sigmoid_err, tanh_err, elu_status):
        v = {"framework_version": version}
        return ([row(layer="relu", case=c, **v) for c in "ab"] + [row(layer="relu", case="c", status=relu_status, **v)]
                + [row(layer="dense", case="a", err_eps=dense_err, **v)]
                + [row(layer="sigmoid", case="a", err_eps=sigmoid_err, **v)]
                + [row(layer="tanh", case="a", err_eps=tanh_err, **v)]
                + [row(layer="elu", case="a", status=elu_status,
                       divergence="tf-elu" if elu_status == "known_divergence" else "", **v)]
                + [row(layer=HOSTILE, case="a", **v)])
    old, new = tmp_path / "tf219", tmp_path / "tf220"
    write_report(rows("2.19.0", "pass", 10.0, 2.0, 0.01, "known_divergence"), old)
    write_report(rows("2.20.0", "fail", 100.0, 3.0, 0.5, "pass"), new)
    return old, new


def test_drift_highlights_verdict_and_error_changes_only(tmp_path):
    old, new = versions(tmp_path)
    out = tmp_path / "drift"
    assert cli.main(["drift", str(old), str(new), "--out", str(out)]) == 0
    table = pd.read_csv(out / "drift.csv", keep_default_na=False).set_index("layer")
    assert set(table.index) == {"relu", "dense", "sigmoid", "tanh", "elu", HOSTILE}
    assert table.loc["relu", "changes"] == "verdict pass (tf219) -> fail (tf220)"
    assert "c (grad x): pass in tf219 -> fail in tf220" in table.loc["relu", "behind"]
    assert table.loc["dense", "changes"].startswith("worst err_eps x10")
    assert "worst in tf220: a (grad x) err_eps 100" in table.loc["dense", "behind"]
    assert "known divergence tf-elu (tf219) -> (none) (tf220)" in table.loc["elu", "changes"]
    for quiet in ("sigmoid", "tanh", HOSTILE):
        assert table.loc[quiet, "changes"] == "", quiet
    assert (table.loc["relu", "tf219 version"], table.loc["relu", "tf220 version"]) == ("2.19.0", "2.20.0")

    raw = (out / "drift.html").read_text(encoding="utf-8")
    page = Page(raw)
    head, body = page.table("all")
    changed = {r[head.index("layer")]["text"]: {h for h, c in zip(head, r) if "changed" in c["class"].split()}
               for r in body}
    assert changed["relu"] == {"changes", "tf219 verdict", "tf220 verdict"}
    assert changed["dense"] == {"changes", "tf219 worst err_eps", "tf220 worst err_eps"}
    assert changed["elu"] >= {"tf219 verdict", "tf220 verdict", "tf219 notes", "tf220 notes"}
    assert changed["sigmoid"] == changed["tanh"] == changed[HOSTILE] == set()
    assert {r[head.index("layer")]["text"] for r in page.table("changed")[1]} == {"relu", "dense", "elu"}
    assert "td.changed{outline" in page.style.replace(" ", "")
    colour_of = page.background()
    verdicts = [c for r in body for h, c in zip(head, r) if h.endswith(" verdict")]
    assert verdicts and all(colour_of.get(c["id"]) == COLOURS[c["text"].split(" (")[0]] for c in verdicts)
    assert {tag for tag, _ in page.tags} <= PAGE_TAGS and page.scripts == [SORT_SCRIPT]
    assert "&lt;script&gt;" in raw and set(page.links) <= page.ids


def test_drift_factor_is_a_bound_both_ways():
    base = [row(layer="dense", case="a", err_eps=40.0)]
    for err, moved in ((40.0 * FACTOR * 0.99, False), (40.0 * FACTOR * 1.01, True), (40.0 / FACTOR / 1.01, True),
                       (40.0 / FACTOR * 1.01, False)):
        table, _ = compare([frame(base), frame([row(layer="dense", case="a", err_eps=err)])], ["a", "b"])
        assert (table.loc[0, "changes"] != "") == moved, err


def test_drift_rejects_what_is_not_a_report(tmp_path, capsys):
    old, _ = versions(tmp_path)
    assert cli.main(["drift", str(old), str(tmp_path / "nope"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "nope (no such directory)" in err and "Traceback" not in err and not (tmp_path / "out").exists()
    with pytest.raises(Exception, match="two or more"):
        drift([old], tmp_path / "out")


def test_tox_runs_drift_after_the_matrix():
    ini = configparser.ConfigParser(interpolation=None)
    ini.read(Path(__file__).resolve().parents[1] / "tox.ini")
    if not ini.has_section("testenv:drift"):
        pytest.skip("tox.ini is not beside the installed tests")
    env = ini["testenv:drift"]
    assert [d.strip() for d in env["depends"].split(",")] == ["tf219", "tf220", "tf221"]
    assert all(f"{{toxworkdir}}/reports/{e}" in env["commands"] for e in ("tf219", "tf220", "tf221"))
    assert env["commands"].startswith("gradparity drift") and "drift" in ini["tox"]["envlist"]


def test_a_huge_error_neither_stretches_the_plot_nor_loses_the_report(tmp_path):
    """An error 2.8e292 times its tolerance (TensorFlow's softplus of subnormal x, float64,
    in a thorough run) made the log axis reach Inf and matplotlib's tick formatter raise,
    which lost the whole report: the dot is drawn at the ceiling, and a plot that still
    cannot be drawn costs only itself."""

    rows = [row(case="a", max_abs_err=2.77, atol=1e-292, status="known_divergence"), row(case="b")]
    written = write_report(rows, tmp_path)
    assert (tmp_path / "plots" / "errors.png").stat().st_size > 0 and written is not None

    def broken(*args):
        raise OverflowError("cannot convert float infinity to integer")

    original = plots.PLOTS["errors"]
    plots.PLOTS["errors"] = (original[0], broken)
    try:
        write_report(rows, tmp_path / "again")
    finally:
        plots.PLOTS["errors"] = original
    page = (tmp_path / "again" / "report.html").read_text()
    assert "not drawn: OverflowError" in page and not (tmp_path / "again" / "plots" / "errors.png").exists()


def test_special_values_show_where_nan_lands_elsewhere_and_list_the_rest(tmp_path):
    nan_case = dict(special="x: 1 NaN", nonfinite="expected 1 NaN; got 1 NaN; 0 position(s) differ")
    rows = [row(case="a", layer="relu", **nan_case),
            row(case="b", layer="max_pool2d", status="known_divergence", divergence="tf-max-pool-skips-nan",
                **{**nan_case, "nonfinite": "expected 1 NaN; got all finite; 1 position(s) differ"}),
            row(case="c", layer="dense")]  # no special value: in neither
    write_report(rows, tmp_path, notes={**NOTES, "special": {"relu": ["x"], "max_pool2d": ["x"]}})
    page = Page((tmp_path / "report.html").read_text())
    table = next(t for t in page.tables if t["under"] == "special")  # its first table: NaN and Inf
    assert [r[1]["text"] for r in table["rows"][1:]] == ["max_pool2d"]  # only where it landed elsewhere
    section = (tmp_path / "report.html").read_text().split('id="special-nonfinite"')[1].split("<h3")[0]
    assert "relu (1 of 1 framework x dtype, 1 non-finite results)" in section and "dense" not in section


# --- coverage, honest cells, divergences that may no longer hold, rings, flow, checks.html, headings ---------------


def raw_section(raw: str, anchor: str) -> str:
    """The raw HTML from the h2 ``anchor`` to the next h2."""
    start = raw.index(f'<h2 id="{anchor}"')
    end = raw.find("<h2", start + 1)
    return raw[start:end if end >= 0 else None]


def test_coverage_lists_unreached_edges_in_red_and_what_cannot_run_with_its_reason(tmp_path):
    rows = [row(case=c, edges="kink") for c in "ab"] + [row(layer="dense", case="d", edges="no_bias")]
    census = [{"layer": "relu", "framework": "torch", "dtype": "float64", "exhausted": False, "planned": 25,
               "edges": {"kink": "", "scalar": "", "subnormal": "torch flushes <b>it</b>"},
               "refused": {"no such <i>form</i>": 7}},
              {"layer": "dense", "framework": "torch", "dtype": "float64", "exhausted": False, "planned": 25,
               "edges": {"no_bias": ""}, "refused": {}}]
    write_report(rows, tmp_path, notes={"census": census, "floors": {"cases": 1, "configurations": 1},
                                        "profile": "ci"})
    raw = (tmp_path / "report.html").read_text()
    page, cov = Page(raw), raw_section(raw, "coverage")
    assert "coverage-activations" in page.h3 and "coverage-activations" in page.links  # a table per family
    lines = {r[0]["text"]: {h["text"]: c for h, c in zip(t["rows"][0], r)}
             for t in page.tables if t["under"] == "coverage" for r in t["rows"][1:]}
    cell = lines["relu"]
    assert cell["cases ran"]["text"] == "2" and "kink\xa02" in cell["edges reached (cases)"]["text"]
    assert '<span class="unreached">scalar&nbsp;0</span>' in cov  # no case reached it: red
    assert ".unreached{color:#b00000" in page.style
    # the edge torch cannot run, with its reason (numbered under the table, escaped), and the refused draws
    assert cell["edges it cannot run [reason]"]["text"] == "subnormal\xa0[1]"
    assert '<li id="coverage-activations-1">torch flushes &lt;b&gt;it&lt;/b&gt;</li>' in cov
    assert cell["configurations it cannot express ([reason] draws)"]["text"] == "[2]\xa07"
    assert '<li id="coverage-activations-2">no such &lt;i&gt;form&lt;/i&gt;</li>' in cov
    assert set(page.links) <= page.ids  # every reason's number lands on it
    # the shortfall: the unreached edge, in a red cell; dense reached its only edge and falls short of nothing
    assert "runnable edges not reached: scalar" in cell["shortfall"]["text"]
    assert "short" in cell["shortfall"]["class"].split() and "td.short{background-color:" in page.style
    assert lines["dense"]["shortfall"]["text"] == "" and "short" not in lines["dense"]["shortfall"]["class"].split()
    assert "1 of 2 groups fall short" in cov

    old = tmp_path / "old"  # a report from before the census: one line, no tables
    write_report(rows, old)
    cov = raw_section((old / "report.html").read_text(), "coverage")
    assert "no census" in cov and "<table" not in cov and cov.count("<p>") == 1


def test_a_mostly_not_applicable_group_does_not_get_the_pass_colour(tmp_path):
    na = {"name": "W", "status": "not_applicable", "detail": "no W", "max_abs_err": float("nan")}
    rows = ([row(case="a")] + [row(case=f"n{i}", **na) for i in range(67)]  # relu: 1 of 68 ran
            + [row(layer="elu", case=f"e{i}") for i in range(7)] + [row(layer="elu", case="n", **na)]  # 7 of 8
            + [row(layer="dense")])  # every check ran
    write_report(rows, tmp_path)
    raw = (tmp_path / "report.html").read_text()
    page = Page(raw)
    colour_of = page.background()
    grid = next(t for t in page.tables if t["under"] == "glance")
    cells = {c["text"]: colour_of.get(c["id"]) for r in grid["rows"] for c in r if c["tag"] == "td" and c["text"]}
    assert cells == {"pass, 1 of 68 ran": MOSTLY_NA, "pass, 7 of 8 ran": COLOURS[PARTLY_NA], "pass": COLOURS["pass"]}
    assert MOSTLY_NA not in (COLOURS["pass"], COLOURS[PARTLY_NA])
    legend = raw_section(raw, "glance").split("<table")[0]  # above the grid: what each colour means
    assert all(f"background-color:{c}" in legend for c in (COLOURS["pass"], COLOURS[PARTLY_NA], MOSTLY_NA))
    assert "most could not run" in legend


def test_a_group_its_framework_cannot_run_reads_so_in_the_grid_not_blank(tmp_path):
    rows = [row(case="a"), row(case="b", framework="torch.compile")]  # relu float64 in both
    census = [{"layer": "relu", "framework": fw, "dtype": "float64", "exhausted": False, "planned": 1,
               "edges": {}, "refused": {}} for fw in ("torch", "torch.compile")]
    census.append({"layer": "relu", "framework": "tensorflow.function", "dtype": "float64", "exhausted": False,
                   "planned": 0, "edges": {}, "refused": {"reads values back with .numpy()": 3}})
    write_report(rows, tmp_path, notes={"census": census, "floors": {"cases": 1, "configurations": 1}})
    page = Page((tmp_path / "report.html").read_text())
    grid = next(t for t in page.tables if t["under"] == "glance")
    colour_of = page.background()
    cells = [c for r in grid["rows"] for c in r if c["tag"] == "td"]
    assert [c["text"] for c in cells] == ["pass", "pass", "cannot run"]
    assert colour_of.get(cells[-1]["id"]) == COLOURS["not_applicable"]


def test_a_divergence_that_explained_nothing_is_flagged_in_the_report(tmp_path):
    notes = {"divergences": [{"key": "still-holds", "layer": "relu", "framework": "torch", "dtype": "*",
                              "reason": "r1", "measured": "m1", "bound": "any error"},
                             {"key": "gone<b>", "layer": "relu", "framework": "torch", "dtype": "*",
                              "reason": "r2", "measured": "m2", "bound": "any error"},
                             {"key": "not-reached", "layer": "elu", "framework": "torch", "dtype": "*",
                              "reason": "r3", "measured": "m3", "bound": "any error"}]}
    rows = [row(case="a", status="known_divergence", divergence="still-holds", max_abs_err=1.0),
            row(case="b", divergence="gone<b>"), row(case="c", divergence="gone<b>")]  # held, every check passed
    written = write_report(rows, tmp_path, notes=notes)
    raw = (tmp_path / "report.html").read_text()
    page = Page(raw)
    head, body = page.table("divergences", STALE)
    flagged = {r[0]["text"]: r[head.index(STALE)] for r in body}
    assert flagged["gone<b>"]["text"] == "its condition held in 2 case(s) but every check passed: is it still true?"
    assert flagged["still-holds"]["text"] == flagged["not-reached"]["text"] == ""
    assert page.background().get(flagged["gone<b>"]["id"]) == COLOURS["known_divergence"]
    lead = raw_section(raw, "divergences").split("<table")[0]
    assert "1 known divergence(s) may no longer hold" in lead and "gone&lt;b&gt;" in lead and "gone<b>" not in lead
    assert any("gone<b>" in w for w in written.warnings)  # what render.py still prints, now also on the page


def test_a_divergence_of_positions_only_is_not_ringed_as_a_failure():
    rows = frame([row(case="p"),
                  row(case="k", status="known_divergence", max_abs_err=0.0,  # NaN placement only: err 0 <= atol
                      nonfinite="expected all finite; got 1 NaN; 1 position(s) differ"),
                  row(case="K", status="known_divergence", max_abs_err=1e-6),  # 1e4 x atol
                  row(case="f", status="fail", max_abs_err=1e-8)])
    over, within = plots.rings(rows)
    assert set(rows["case"][over]) == {"K", "f"} and set(rows["case"][within]) == {"k"}
    ax = plots.errors_against_tolerance(rows).axes[0]
    rings = {}
    for c in ax.collections:  # the rings: no face, one edge colour
        if len(c.get_facecolor()) == 0 and len(c.get_offsets()):
            rings.setdefault(tuple(np.round(c.get_edgecolor()[0][:3], 3)), []).extend(c.get_offsets()[:, 0])
    black = rings.pop((0.0, 0.0, 0.0))
    assert sorted(black) == pytest.approx([100.0, 1e4]) and min(black) > 1  # right of the pass line only
    assert [pytest.approx(x) for x in sum(rings.values(), [])] == [plots.FLOOR]  # the other ring: left, at 0
    labels = [t.get_text() for legend in ax.findobj(lambda a: type(a).__name__ == "Legend") for t in legend.texts]
    assert any("error within atol" in t for t in labels) and any("error > atol" in t for t in labels)


def flow(layer, framework, case, ref, got=None, dtype="float64"):
    profile = json.dumps({"reference": list(ref), "candidate": list(ref if got is None else got)})
    return row(layer=layer, framework=framework, case=case, dtype=dtype, kind="flow", profile=profile,
               shape=f"({len(ref)},)")


def test_the_flow_plot_draws_one_case_common_to_every_framework():
    long, short = np.geomspace(1e-3, 1.0, 50), [0.1, 0.2, 0.5, 1.0]
    rows = frame([flow("lstm", "torch", "own-torch", long), flow("lstm", "tensorflow", "own-tf", long),
                  flow("lstm", "torch", "both", short), flow("lstm", "tensorflow", "both", short),
                  flow("gru", "torch", "t", long), flow("gru", "tensorflow", "f", short)])  # nothing common
    picks = plots.flow_picks(plots._profiles(rows)).set_index(["layer", "framework"])
    assert picks.loc[("lstm", "torch"), "case"] == picks.loc[("lstm", "tensorflow"), "case"] == "both"
    assert picks.loc[("lstm", "torch"), "common"] and not picks.loc[("gru", "torch"), "common"]
    assert (picks.loc[("gru", "torch"), "case"], picks.loc[("gru", "tensorflow"), "case"]) == ("t", "f")
    fig = plots.gradient_flow(rows, ["gru", "lstm"])
    legends = {ax.get_title(): " ".join(t.get_text() for t in ax.get_legend().texts) for ax in fig.axes}
    assert "case both" in legends["lstm: torch"] and "case both" in legends["lstm: tensorflow"]
    assert "no case common" in legends["gru: torch"] and "no case common" not in legends["lstm: torch"]


def test_the_flow_plot_draws_nothing_below_the_dtypes_resolution():
    drawn, below = plots.resolved(np.array([1.0, 1e-20, 0.0, np.nan]), 1e-7)
    assert drawn[:3].tolist() == [1.0, 1e-7, 1e-7] and np.isnan(drawn[3]) and below.tolist() == [0, 1, 1, 0]
    ref = np.geomspace(1e-17, 1.0, 20)  # float32: the oracle far below eps, the framework further still
    fig = plots.gradient_flow(frame([flow("lstm", "torch", "a", ref, np.where(ref < 1e-8, 1e-36, ref),
                                          dtype="float32")]))
    ax = fig.axes[0]
    floor = float(np.finfo(np.float32).eps)
    ys = np.concatenate([line.get_ydata() for line in ax.lines] + [c.get_offsets()[:, 1] for c in ax.collections])
    assert np.nanmin(ys) == pytest.approx(floor)  # nothing drawn below max x eps
    assert any(c.get_offsets().shape[0] and np.allclose(c.get_offsets()[:, 1], floor) for c in ax.collections)
    assert any("floor" in t.get_text() for t in ax.get_legend().texts)  # and the panel says so


def test_every_check_that_did_not_pass_is_on_checks_html_and_the_report_links_it(report):
    _, raw, page = report
    rows = frame(report_rows())
    text = checks_page(rows, {"partial": False})
    checks = Page(text)
    head, body = next((h, b) for h, b in [checks.table(None, "reproduce")])
    bad = rows[~rows["status"].isin(["pass", "not_applicable"])]
    assert len(body) == len(bad) == 6
    assert sorted(r[head.index("status")]["text"] for r in body) == sorted(bad["status"])
    assert {tag for tag, _ in checks.tags} <= PAGE_TAGS and checks.scripts == [SORT_SCRIPT]
    assert HOSTILE in "".join(c["text"] for r in body for c in r) and "&lt;script&gt;" in text
    assert "sortable" in checks.tables[0]["class"] and "report.html#not-passing" in text
    section = raw_section(raw, "not-passing")
    assert '<a href="checks.html">checks.html</a>' in section and "All 6 checks" in section
    assert "<details" not in raw  # the list is no longer embedded
    assert not any(t["under"] == "not-passing" and t["rows"] and "reproduce" in [c["text"].strip()
                   for c in t["rows"][0]] for t in page.tables)


def test_headings_wrap_only_between_words(report):
    assert "table.grid th{overflow-wrap:normal;word-break:normal" in STYLE
    assert not re.search(r"th\{[^}]*(overflow-wrap:anywhere|word-break:break-all)", STYLE)
    _, raw, page = report  # a name's words may part after its underscores, and only there
    assert re.search(r"<th[^>]*>known_<wbr>divergence</th>", raw)
    assert "known_divergence" in [c["text"] for t in page.tables for c in t["rows"][0]]


def _model_rows(case, framework, edges, norms, **failing):
    """The cot rows of one model case: step i:relu with the oracle's norm ``norms[i-1]`` (the framework's
    the same); ``failing``: {step name: first_divergence} for rows that did not pass."""
    out = []
    for i, norm in enumerate(norms, 1):
        name = f"{i}:relu"
        bad = failing.get(name)
        out.append(row(layer="model_mlp", family="models", framework=framework, case=case, kind="cot", name=name,
                       edges=edges, norm=norm, reference_norm=norm, status="known_divergence" if bad else "pass",
                       divergence="k" if bad else "", first_divergence=bad or ""))
    return out


def test_the_models_section_names_first_divergences_and_draws_gradient_health(tmp_path):
    rows = []
    for fw in ("torch", "tensorflow"):
        rows += _model_rows("deep", fw, "batch_1, deep_sigmoid", [1e-6, 1e-4, 1e-2, 1.0])
        rows += _model_rows("wide", fw, "deep_residual", [0.5, 0.6, 0.8, 1.0])
        rows += _model_rows("free", fw, "batch_1", [0.1, 0.2, 0.3, 1.0])
        rows += _model_rows("short", fw, "deep_relu", [0.5, 1.0])
    rows += _model_rows("bad", "tensorflow", "", [0.1, 0.2, 0.3, 1.0], **{"2:relu": "2:relu (forward)",
                                                                        "3:relu": "2:relu (forward)"})
    write_report(rows, tmp_path)
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    table = next(t for t in Page(page).tables if t["under"] == "models")
    cells = {(r[0]["text"], r[1]["text"], r[2]["text"]): [c["text"] for c in r] for r in table["rows"]}
    tf = cells["model_mlp", "tensorflow", "float64"]
    assert "2:relu (forward) x1" in tf and "k" in tf and tf[4] == "1"  # one case did not pass, counted once
    # the deepest case's gradient vanishes: at the first layer 1e-4 of what reaches the last before the loss
    assert float(cells["model_mlp", "torch", "float64"][-1]) == pytest.approx(1e-4)
    assert (tmp_path / "plots" / "gradient_health.png").is_file() and 'id="plot-gradient_health"' in page
    picks = plots.health_picks(frame(rows))
    # the deepest cases every framework ran, the model's own edges first, one case per edge set
    assert sorted(set(picks["case"])) == ["deep", "free", "wide"]
    assert set(plots.health_picks(frame(rows), per_model=2)["case"]) == {"deep", "wide"}


def test_the_modes_section_shows_each_compiled_mode_against_the_oracle_and_against_eager(tmp_path):
    rows = [row(case="a"), row(case="a", framework="torch.compile", mode="compile", vs_eager_eps=0.0, err_eps=3.0),
            row(case="b", framework="torch.compile", mode="compile", vs_eager_eps=2.5, err_eps=7.0, status="fail",
                max_rel_err=1e-3)]
    write_report(rows, tmp_path)
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    table = next(t for t in Page(page).tables if t["under"] == "modes")
    cells = [[c["text"] for c in r] for r in table["rows"]][1:]  # the first is the heading
    assert len(cells) == 1 and cells[0][1:6] == ["relu", "torch.compile", "compile", "float64", "2"]
    assert cells[0][6] == "1" and float(cells[0][7]) == 7.0 and float(cells[0][8]) == 2.5
    start = page.index('<h2 id="glance"')
    assert "torch.compile" in page[start:page.index("<h2", start + 5)]  # the grid has a column for the mode

