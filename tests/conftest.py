"""Hypothesis profiles, the --report-dir option, and the collection of report rows.

Rows travel from xdist workers to the controller through ``workeroutput`` (the
channel xdist provides for this), so a ``-n 2`` run writes one report with
every row once.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

_common = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("dev", max_examples=8, **_common)
settings.register_profile("ci", max_examples=25, derandomize=True, print_blob=True, **_common)
settings.register_profile("thorough", max_examples=250, print_blob=True, **_common)
settings.load_profile("ci")  # --hypothesis-profile overrides this


def pytest_addoption(parser):
    parser.addoption("--report-dir", default=None, metavar="DIR",
                     help="write gradients.csv, summary.csv and report.html into DIR")


class Recorder:
    """Collects report rows; saves every case that did not pass, for replay."""

    def __init__(self, case_dir: Path):
        self.rows: list[dict] = []
        self.case_dir = case_dir

    def add(self, rows: list[dict], case) -> list[dict]:
        if any(r["status"] != "pass" for r in rows):
            path = case.save(self.case_dir / f"{case.layer}-{case.id}.npz")
            for r in rows:
                if r["status"] != "pass":
                    r["reproduce"] = f"python -m reports.replay {path} --framework {r['framework']}"
        self.rows.extend(rows)
        return rows


def pytest_configure(config):
    report_dir = config.getoption("--report-dir")
    if report_dir:
        case_dir = Path(report_dir) / "cases"
    else:
        cache = getattr(config, "cache", None)
        case_dir = Path(str(cache.mkdir("gradparity-cases"))) if cache else Path(".gradparity-cases")
    config._gradparity = Recorder(case_dir)
    config._gradparity_workers: list[dict] = []


@pytest.fixture(scope="session")
def recorder(request) -> Recorder:
    return request.config._gradparity


@pytest.fixture(scope="session")
def adapter_for():
    """``adapter_for(name)``: the adapter, or a skip saying why its framework is missing."""
    from gradparity.adapters import ADAPTERS

    def get(name):
        adapter = ADAPTERS[name]
        ok, why = adapter.available()
        if not ok:
            pytest.skip(why)
        return adapter

    return get


def _plain(row: dict) -> dict:
    """Only the builtin types travel between xdist processes (no NumPy scalars)."""
    return {k: v.item() if hasattr(v, "item") else v for k, v in row.items()}


def pytest_testnodedown(node, error):  # xdist controller: a worker's rows arrive
    node.config._gradparity.rows.extend(getattr(node, "workeroutput", {}).get("gradparity_rows", []))


def pytest_sessionfinish(session):
    config = session.config
    rows = config._gradparity.rows
    if hasattr(config, "workeroutput"):  # an xdist worker: hand rows to the controller
        config.workeroutput["gradparity_rows"] = [_plain(r) for r in rows]
        return
    report_dir = config.getoption("--report-dir")
    if not report_dir:
        return
    from gradparity.reports.render import write_report

    config._gradparity_summary = write_report(rows, Path(report_dir))


def pytest_terminal_summary(terminalreporter, config):
    summary = getattr(config, "_gradparity_summary", None)
    if summary is not None:
        terminalreporter.write_sep("-", "gradparity report")
        terminalreporter.write_line(summary.text)
        for message in summary.warnings:
            terminalreporter.write_line(f"WARNING: {message}", yellow=True)
