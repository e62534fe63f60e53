"""The README's "Checking your own layer" works: the example registers a layer
from outside gradparity, the suite checks it in every framework, and a wrong
vjp in it is caught (by finite differences and by every framework)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gradparity.adapters import ADAPTERS
from gradparity.reports.render import read_rows

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "learnable_swish.py"
pytestmark = [
    pytest.mark.skipif(not EXAMPLE.is_file(), reason="examples/ is in the repository, not the installed package"),
    pytest.mark.skipif(not any(a.available()[0] for a in ADAPTERS.values()), reason="no framework installed"),
]


def run_example(tmp_path: Path, source: str, *extra):
    (tmp_path / "learnable_swish.py").write_text(source)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run([sys.executable, "-m", "gradparity.reports.cli", "run", "-p", "learnable_swish",
                           "-k", "learnable_swish", "--profile", "dev", "--report-dir", str(tmp_path / "report"),
                           *extra], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)


def test_a_users_layer_is_checked_in_every_framework(tmp_path):
    done = run_example(tmp_path, EXAMPLE.read_text())
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = read_rows(tmp_path / "report")
    available = {name for name, a in ADAPTERS.items() if a.available()[0]}
    assert set(rows["layer"]) == {"learnable_swish"} and set(rows["framework"]) == available
    assert set(rows["name"]) == {"y", "x", "beta"} and set(rows["status"]) == {"pass"}


def test_a_wrong_vjp_in_a_users_layer_is_caught(tmp_path):
    wrong = EXAMPLE.read_text().replace('"beta": (g * x * x * ds).sum(axis=0)', '"beta": (g * x * ds).sum(axis=0)')
    assert wrong != EXAMPLE.read_text()
    first = next(name for name, a in ADAPTERS.items() if a.available()[0])  # one framework is enough here
    done = run_example(tmp_path, wrong, "--frameworks", first)
    assert done.returncode == 1
    assert "test_vjp_matches_numerical_derivative[learnable_swish]" in done.stdout
    rows = read_rows(tmp_path / "report")
    beta = rows[rows["name"] == "beta"]
    # every framework is flagged (a case with x in {0, 1} only cannot tell x from x^2, and passes)
    assert set(beta[beta["status"] == "fail"]["framework"]) == set(rows["framework"])
    assert set(rows[rows["name"] != "beta"]["status"]) == {"pass"}
