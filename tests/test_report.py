"""The run pipeline, end to end in subprocesses: rows reaching disk from every
process, interrupted, crashed and killed runs, the report directory checked first
and holding one run, the terminal summary, the same cases from every entry point,
the `gradparity` command from any directory, sharding, replay's errors."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gradparity.adapters import ADAPTERS
from gradparity.reference import Case
from gradparity.reports.files import MANIFEST, read_rows
from gradparity.reports.render import write_report

KEY = ["layer", "framework", "dtype", "case", "kind", "name"]
FRAMEWORK = next((name for name in ("torch", "tensorflow") if ADAPTERS[name].available()[0]), None)
needs_framework = pytest.mark.skipif(FRAMEWORK is None,
                                     reason="no framework installed (pip install 'gradparity[torch]')")
SMALL = "relu- or tanh-"  # relu, leaky_relu and tanh: small, and quick in every framework


def gradparity(*args, cwd: Path, check=True, **popen) -> subprocess.CompletedProcess:
    """The `gradparity` command, from ``cwd`` (never the repository)."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(cwd)}
    done = subprocess.run([sys.executable, "-m", "gradparity.reports.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600, **popen)
    if check:
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def suite(report_dir: Path, *extra, cwd: Path, k=SMALL, check=True):
    return gradparity("run", "-k", k, "--frameworks", FRAMEWORK, "--report-dir", str(report_dir), *extra,
                      cwd=cwd, check=check)


def pytest_without_xdist(report_dir: Path, k: str, *, cwd: Path):
    """The installed suite run by pytest itself, one process, from ``cwd`` (never the repository)."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:xdist", "-p", "no:cacheprovider", "-q",
                           "--pyargs", "gradparity.tests.test_gradients", "-k", k, "--report-dir", str(report_dir)],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def keys(df: pd.DataFrame) -> set:
    return set(map(tuple, df[KEY].values))


@pytest.fixture(scope="module")
def whole(tmp_path_factory) -> pd.DataFrame:
    """The rows of one serial run of the small selection (the ci profile is derandomized:
    every run draws the same cases)."""
    cwd = tmp_path_factory.mktemp("whole")
    suite(cwd / "report", cwd=cwd)
    return read_rows(cwd / "report")


@needs_framework
def test_rows_from_xdist_workers_all_arrive_once(tmp_path, whole):
    suite(tmp_path / "parallel", "-n", "2", cwd=tmp_path)
    serial, parallel = whole, read_rows(tmp_path / "parallel")
    assert len(serial) > 0 and not parallel.duplicated(KEY).any()
    assert keys(parallel) == keys(serial)
    assert not (tmp_path / "parallel" / ".runs").exists(), "a run's rows are removed once joined"


@needs_framework
def test_the_command_runs_from_any_directory_into_an_existing_report_dir(tmp_path):
    report = tmp_path / "D"
    report.mkdir()
    done = gradparity("run", "-k", "dense", "--frameworks", FRAMEWORK, "--dtypes", "float32",
                      "--report-dir", str(report), "--profile", "dev", cwd=tmp_path)
    rows = read_rows(report)
    assert set(rows["layer"]) == {"dense"} and set(rows["framework"]) == {FRAMEWORK}
    assert set(rows["dtype"]) == {"float32"}
    assert "gradparity report" in done.stdout and "partial" not in done.stdout


@needs_framework
def test_pytest_without_xdist_works(tmp_path):
    pytest_without_xdist(tmp_path / "D", f"relu-{FRAMEWORK}-float32", cwd=tmp_path)
    assert len(read_rows(tmp_path / "D")) > 0


@needs_framework
def test_shards_join_into_the_whole_run(tmp_path, whole):
    suite(tmp_path / "one", "--shard", "1/2", cwd=tmp_path)
    suite(tmp_path / "two", "--shard", "2/2", cwd=tmp_path)
    one, two = keys(read_rows(tmp_path / "one")), keys(read_rows(tmp_path / "two"))
    assert one and two and not one & two
    gradparity("merge", str(tmp_path / "one"), str(tmp_path / "two"), "--out", str(tmp_path / "joined"),
               cwd=tmp_path)
    assert keys(read_rows(tmp_path / "joined")) == keys(whole)


@pytest.mark.parametrize("make, message", [
    (lambda p: p.write_text("a file"), "exists and is not a directory"),
    (lambda p: (p.parent / "file").write_text("x"), "is a file, not a directory"),
])
def test_an_unusable_report_dir_is_one_line_before_anything_runs(tmp_path, make, message):
    target = tmp_path / "report"
    make(target)
    if not target.exists():
        target = tmp_path / "file" / "report"
    started = time.monotonic()
    done = suite(target, cwd=tmp_path, check=False) if FRAMEWORK else gradparity(
        "run", "--report-dir", str(target), cwd=tmp_path, check=False)
    assert done.returncode == 4, done.stdout + done.stderr
    errors = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    assert any(message in line and "--report-dir" in line for line in errors), errors
    assert "Traceback" not in done.stdout + done.stderr
    assert time.monotonic() - started < 60


def test_unknown_framework_or_shard_is_a_usage_error(tmp_path):
    done = gradparity("run", "--frameworks", "torch,mxnet", cwd=tmp_path, check=False)
    assert done.returncode == 4 and "unknown framework mxnet" in done.stderr + done.stdout
    done = gradparity("run", "--shard", "3/2", cwd=tmp_path, check=False)
    assert done.returncode == 2 and "K/N" in done.stderr


PRIOR = [{"layer": "relu", "framework": "torch", "framework_version": "0", "reference": "oracle",
          "dtype": "float64", "case": f"c{i}", "kind": "grad", "name": "x", "shape": "(2,)", "max_abs_err": 0.0,
          "max_rel_err": 0.0, "err_eps": 0.0, "scale": 1.0, "condition": 1.0, "atol": 1e-10, "rtol": 1e-10,
          "status": "pass", "detail": "", "convention": "", "divergence": "", "tolerance_reason": "default",
          "attrs": "", "reproduce": ""} for i in range(50)]


@needs_framework
def test_ctrl_c_keeps_the_previous_report_and_writes_a_partial_one(tmp_path):
    report = tmp_path / "D"
    write_report(PRIOR, report)
    before = (report / "gradients.csv").read_bytes()
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.Popen([sys.executable, "-m", "gradparity.reports.cli", "run", "-k", SMALL, "--frameworks",
                             FRAMEWORK, "--profile", "thorough", "-n", "2", "--report-dir", str(report)],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:  # until some rows reached disk
        if sum(len(s.read_text().splitlines()) for s in report.glob(".runs/*/rows/*.jsonl")) >= 20:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be interrupted: " + proc.stdout.read()[-2000:]
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=300)
    assert (report / "gradients.csv").read_bytes() == before, "an interrupted run replaced the report"
    partial = read_rows(report / "partial")
    assert len(partial) >= 20
    assert "partial" in (report / "partial" / "report.html").read_text().lower()
    assert "partial" in out, out[-3000:]


CRASH = '''
import os


def pytest_configure(config):
    if os.environ.get("PYTEST_XDIST_WORKER"):
        from gradparity.adapters import ADAPTERS

        runner = ADAPTERS["{framework}"]
        original = runner.run

        def run(case):
            if case.layer == "tanh" and case.dtype == "float64":
                os._exit(1)  # the worker dies inside the framework, as an aborting kernel would
            return original(case)

        runner.run = run
'''


@needs_framework
def test_rows_of_a_crashed_worker_survive_and_the_report_names_the_case(tmp_path, whole):
    (tmp_path / "crash_plugin.py").write_text(CRASH.format(framework=FRAMEWORK))
    done = suite(tmp_path / "crashed", "-n", "2", "-p", "crash_plugin", cwd=tmp_path, check=False)
    assert done.returncode != 0
    crashed = read_rows(tmp_path / "crashed" / "partial")  # a run that did not finish: a partial report
    expected = keys(whole[~((whole["layer"] == "tanh") & (whole["dtype"] == "float64"))])
    assert expected and keys(crashed) == expected
    run = json.loads((tmp_path / "crashed" / "partial" / "meta.json").read_text())["run"]
    target = f"tanh-{FRAMEWORK}-float64"
    assert run["partial"] and any(target in m for m in run["missing"])
    assert "partial" in done.stdout
    # the case the worker was running when it died is saved, and replays
    replay = run["why"].split("gradparity replay ")[1].split(";")[0].strip()
    assert "tanh[float64]" in run["why"] and Path(replay).is_file()
    assert "tanh[float64]" in gradparity("replay", replay, "--framework", FRAMEWORK, cwd=tmp_path).stdout


def test_replay_of_a_missing_or_corrupt_file_is_one_line(tmp_path):
    (tmp_path / "corrupt.npz").write_bytes(b"not a zip file")
    for path in (tmp_path / "missing.npz", tmp_path / "corrupt.npz"):
        done = gradparity("replay", str(path), cwd=tmp_path, check=False)
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 2 and len(lines) == 1 and str(path) in lines[0], done.stderr


@needs_framework
def test_replay_reruns_a_saved_case(tmp_path):
    case = Case("relu", "float64", {}, {"x": np.array([[1.0, -2.0, 0.0]])}, {"y": np.array([[0.5, 1.5, -1.0]])})
    path = case.save(tmp_path / "relu.npz")
    done = gradparity("replay", str(path), "--framework", FRAMEWORK, cwd=tmp_path)
    assert f"{FRAMEWORK:<10} grad x" in done.stdout and "pass" in done.stdout


def test_a_case_saved_before_an_attribute_existed_loads_with_its_default(tmp_path):
    """conv2d gained `batched` after cases were saved: an old file still loads and
    validates (as batched), in both saved forms; a new case must still say it."""
    from gradparity.reference import validate
    from gradparity.reference.case import from_json, load, to_json

    x, W = np.ones((1, 1, 3, 3)), np.ones((1, 1, 2, 2))
    attrs = dict(batched=True, stride_h=1, stride_w=1, dilation_h=1, dilation_w=1, groups=1, padding="valid",
                 pad_top=0, pad_bottom=0, pad_left=0, pad_right=0)
    new = Case("conv2d", "float64", attrs, {"x": x, "W": W}, {"y": np.ones((1, 1, 2, 2))})
    old = new.replace(attrs={k: v for k, v in attrs.items() if k != "batched"})
    with pytest.raises(ValueError, match="needs batched"):
        validate(old)
    for loaded in (load(old.save(tmp_path / "old.npz")), from_json(to_json(old))):
        assert loaded.attrs["batched"] is True and validate(loaded).name == "conv2d"


# ---- a report directory holds one run; nothing reaching disk is lost

def _sigint_twice(report: Path, cwd: Path, rows: int = 20) -> str:
    """Start a thorough run, wait for ``rows`` rows on disk, press Ctrl-C twice one second
    apart (to the whole process group, as a terminal does); its output."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.Popen([sys.executable, "-m", "gradparity.reports.cli", "run", "-k", SMALL, "--frameworks",
                             FRAMEWORK, "--profile", "thorough", "-n", "2", "--report-dir", str(report)],
                            cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if sum(len(s.read_text().splitlines()) for s in report.glob(".runs/*/rows/*.jsonl")) >= rows:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be interrupted: " + proc.stdout.read()[-2000:]
    os.killpg(proc.pid, signal.SIGINT)
    time.sleep(1.0)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
    return proc.communicate(timeout=300)[0]


@needs_framework
def test_ctrl_c_twice_still_writes_the_partial_report(tmp_path):
    report = tmp_path / "D"
    out = _sigint_twice(report, tmp_path)
    assert len(read_rows(report / "partial")) >= 20, out[-3000:]
    assert not (report / ".runs").exists(), "rows left behind"
    assert not (report / "gradients.csv").exists(), "a partial run wrote outside partial/"


@needs_framework
def test_a_rerun_leaves_exactly_its_own_files_and_never_a_users(tmp_path):
    report = tmp_path / "D"
    (tmp_path / "broken_tanh.py").write_text(BROKEN.format(framework=FRAMEWORK))
    suite(report, "-p", "broken_tanh", cwd=tmp_path, k="tanh-", check=False)  # failing cases are saved
    first = {p.relative_to(report).as_posix() for p in report.rglob("*") if p.is_file()}
    assert any(name.startswith("cases/tanh-") for name in first)
    (report / "mine.txt").write_text("a user's file")
    (report / "cases" / "mine.npz").write_bytes(b"a user's file too")
    suite(report, cwd=tmp_path, k="dense-")
    now = {p.relative_to(report).as_posix() for p in report.rglob("*") if p.is_file()}
    owned = set((report / MANIFEST).read_text().split())
    assert now == owned | {MANIFEST, "mine.txt", "cases/mine.npz"}
    assert not any(name.startswith("cases/tanh-") for name in now), "a stale case of the earlier run"
    assert set(read_rows(report)["layer"]) == {"dense"}


@needs_framework
def test_an_interrupted_run_keeps_its_cases_under_partial_and_a_complete_one_clears_it(tmp_path):
    report = tmp_path / "D"
    _sigint_twice(report, tmp_path)
    partial = read_rows(report / "partial")
    assert all(str(report / "partial" / "cases") in r for r in partial["reproduce"] if r)
    assert not (report / "cases").exists()
    suite(report, cwd=tmp_path, k="dense-")
    assert not (report / "partial").exists() and len(read_rows(report)) > 0


@needs_framework
def test_rows_of_a_killed_run_are_offered_at_the_next_start_and_recovered(tmp_path):
    report = tmp_path / "D"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.Popen([sys.executable, "-m", "gradparity.reports.cli", "run", "-k", SMALL, "--frameworks",
                             FRAMEWORK, "--profile", "thorough", "--report-dir", str(report)],
                            cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if sum(len(s.read_text().splitlines()) for s in report.glob(".runs/*/rows/*.jsonl")) >= 20:
            break
        time.sleep(0.05)
    proc.kill()  # the main process itself: nothing of it writes a report
    proc.wait()
    left = sum(len(s.read_text().splitlines()) for s in report.glob(".runs/*/rows/*.jsonl"))
    done = suite(report, cwd=tmp_path, k="dense-")
    assert f"holds {left} rows of run" in done.stdout and "--recover" in done.stdout
    assert gradparity("merge", str(report), "--recover", cwd=tmp_path).stdout.startswith("partial:")
    assert len(read_rows(report / "partial")) == left
    assert len(read_rows(report)) > 0 and not (report / ".runs").exists()
    assert gradparity("merge", str(report), "--recover", cwd=tmp_path, check=False).returncode == 2


@needs_framework
def test_a_merged_report_brings_its_cases_with_it(tmp_path):
    suite(tmp_path / "one", "--shard", "1/2", cwd=tmp_path, k="leaky_relu- or dense-")
    suite(tmp_path / "two", "--shard", "2/2", cwd=tmp_path, k="leaky_relu- or dense-")
    gradparity("merge", str(tmp_path / "one"), str(tmp_path / "two"), "--out", str(tmp_path / "joined"),
               cwd=tmp_path)
    replays = [r for r in read_rows(tmp_path / "joined")["reproduce"] if r]
    assert all(str(tmp_path / "joined" / "cases") in r and Path(r.split()[2]).is_file() for r in replays)


BROKEN = '''
from gradparity.adapters import ADAPTERS

builders = ADAPTERS["{framework}"].builders.build
original = builders["tanh"]


def off_by_a_little(t, a, dtype):
    built = original(t, a, dtype)
    return type(built)(lambda t: built.apply(t) * 1.001, built.params, built.drawn)


builders["tanh"] = off_by_a_little
'''


@needs_framework
def test_the_terminal_says_which_group_failed_and_how_to_replay_it(tmp_path):
    (tmp_path / "broken_tanh.py").write_text(BROKEN.format(framework=FRAMEWORK))
    done = suite(tmp_path / "D", "-p", "broken_tanh", cwd=tmp_path, k="tanh-", check=False)
    assert done.returncode == 1
    # Our section only: pytest's own short summary follows it, untruncated where CI is set.
    summary = done.stdout.split("gradparity report")[1].split("\n=====")[0]
    lines = summary.splitlines()
    failed = [line for line in lines if line.strip().startswith(f"tanh-{FRAMEWORK}-float")]
    assert len(failed) == 2 and all("x atol in " in line and "gradparity replay" in line for line in failed)
    assert any(line.startswith("report: ") and line.endswith("report.html") for line in lines)
    assert len([line for line in lines if line.strip()]) <= 30


@needs_framework
def test_pytest_and_gradparity_run_check_the_same_cases(tmp_path):
    pytest_without_xdist(tmp_path / "P", f"dense and {FRAMEWORK}", cwd=tmp_path)
    gradparity("run", "-k", "dense", "--frameworks", FRAMEWORK, "--report-dir", str(tmp_path / "G"), cwd=tmp_path)
    by_pytest, by_command = read_rows(tmp_path / "P"), read_rows(tmp_path / "G")
    assert len(by_pytest) > 0
    assert set(by_pytest["case"]) == set(by_command["case"])
