"""The report files: schema, summary counts, merging, and rows arriving from xdist workers."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gradparity.reports.__main__ import main as merge_main
from gradparity.reports.compare import COLUMNS
from gradparity.reports.render import write_report

ROOT = Path(__file__).resolve().parents[1]


def row(case, tensor="x", status="pass", layer="relu", framework="torch", err=1e-12, reproduce=""):
    return {"layer": layer, "framework": framework, "framework_version": "9.9", "dtype": "float64",
            "case": case, "tensor": tensor, "shape": "(2,)", "max_abs_err": err, "max_rel_err": err,
            "err_eps": err / 2.2e-16, "scale": 1.0, "atol": 1e-10, "rtol": 1e-10, "status": status,
            "detail": "" if status == "pass" else "worst at (0,)", "convention": "",
            "tolerance_reason": "default", "attrs": "relu[float64](x(2,))", "reproduce": reproduce}


def _run_suite(report_dir: Path, *extra):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    cmd = [sys.executable, "-m", "pytest", "tests/test_gradients.py", "-q", "-p", "no:cacheprovider",
           "-k", "relu- or tanh-", "--hypothesis-profile", "ci", "--report-dir", str(report_dir), *extra]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return pd.read_csv(report_dir / "gradients.csv")


def test_rows_from_xdist_workers_all_arrive_once(tmp_path):
    pytest.importorskip("xdist")
    serial = _run_suite(tmp_path / "serial")
    parallel = _run_suite(tmp_path / "parallel", "-n", "2")
    key = ["layer", "framework", "dtype", "case", "tensor"]
    assert not parallel.duplicated(key).any()
    assert set(map(tuple, parallel[key].values)) == set(map(tuple, serial[key].values))
    assert set(parallel["framework"]) == set(serial["framework"]) and len(serial) > 0
