"""The gradparity pytest plugin, registered through the ``pytest11`` entry point.

It adds the options (``--report-dir``, ``--frameworks``, ``--dtypes``,
``--gradparity-profile``, ``--strict-precision``), the hypothesis profiles, the layer x framework x
dtype parametrization (``@pytest.mark.gradparity_matrix``), and the report
pipeline:

* every process (the only one, or each xdist worker) appends its rows to its
  own shard file ``DIR/.rows/RUN-WORKER.jsonl`` as each test finishes, so an
  interrupted run or a crashed worker loses nothing it had finished;
* at the end the controller joins the shards into the report; a run that did
  not finish says "partial" with what is missing, and never replaces an
  existing report (it goes to ``DIR/partial/`` then).

Loaded in every pytest session of an environment where gradparity is
installed, it stays out of the way, as hypothesis' own plugin does: until a
gradparity option is given or a gradparity test is collected it imports
nothing of gradparity (no catalogue, no framework, no user plugin from the
``gradparity.plugins`` entry points) and changes nothing in the session.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import os
import signal
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass(frozen=True)
class Profile:
    """How much a run checks. ``plan``: planned cases per layer x framework x dtype
    (every runnable edge first); ``examples``: hypothesis examples per test (the
    exploration, the canary, the oracle's finite differences); ``explore``: whether
    hypothesis draws beyond the plan; ``floors``: the coverage each group must
    reach (real cases, distinct configurations), or None. A compiled execution
    mode compiles where eager runs: ``compiled_plan`` cases per group (the edges
    first), held to ``compiled_floors``; ``modes``: the execution modes run when
    ``--modes`` is not given."""

    name: str
    plan: int
    examples: int
    derandomize: bool
    explore: bool
    floors: dict | None
    compiled_plan: int = 10
    compiled_floors: dict | None = None
    modes: str = "eager"

    def plan_for(self, mode: str) -> int:
        return self.plan if mode == "eager" else min(self.plan, self.compiled_plan)

    def floors_for(self, mode: str) -> dict | None:
        return self.floors if mode == "eager" else self.compiled_floors


PROFILES = {p.name: p for p in (
    Profile("dev", plan=8, examples=8, derandomize=False, explore=False, floors=None, compiled_plan=4),
    Profile("ci", plan=25, examples=25, derandomize=True, explore=False, floors={"cases": 20, "configurations": 15},
            compiled_floors={"cases": 8, "configurations": 6}),
    Profile("thorough", plan=25, examples=250, derandomize=False, explore=True,
            floors={"cases": 20, "configurations": 15}, compiled_plan=25,
            compiled_floors={"cases": 20, "configurations": 15}, modes="all"),
)}
_active_profile = "ci"


def active_profile() -> Profile:
    """The profile chosen with ``--gradparity-profile`` (``ci`` outside pytest)."""
    return PROFILES[_active_profile]


def profile():
    """The hypothesis settings of the active profile: gradparity's hypothesis tests
    decorate with ``@settings(profile())``."""
    from hypothesis import HealthCheck, settings

    p = active_profile()
    return settings(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
                    max_examples=p.examples, derandomize=p.derandomize, print_blob=p.name != "dev")


def pytest_addoption(parser):
    group = parser.getgroup("gradparity", "gradparity: gradients against the NumPy oracle")
    group.addoption("--report-dir", default=None, metavar="DIR",
                    help="write gradients.csv, summary.csv, report.html (and the failing cases) into DIR")
    group.addoption("--frameworks", default=None, metavar="A,B",
                    help="frameworks to check (default: every registered one)")
    group.addoption("--dtypes", default=None, metavar="A,B", help="dtypes to check (default: float32,float64)")
    group.addoption("--modes", default=None, metavar="A,B",
                    help="execution modes to check: eager, compile and inductor (torch.compile), function and xla "
                         "(tf.function, jit_compile); 'all' for every mode of every framework (default: eager; the "
                         "thorough profile: all)")
    group.addoption("--gradparity-profile", default="ci", choices=sorted(PROFILES),
                    help="how much to check: dev (8 planned cases per layer x framework x dtype), ci (25: every "
                         "runnable edge, then new configurations; the default), thorough (the 25, then 250 drawn "
                         "by hypothesis)")
    group.addoption("--gradparity-shard", default=None, metavar="K/N",
                    help="run only part K of N of the collected tests (by a hash of each test id: the same "
                         "parts on every machine); gradparity merge joins the reports")
    group.addoption("--strict-precision", action="store_true", default=False,
                    help="fail a check whose element-wise precision was lost (max_ulp_err above the ulp bound "
                         "of reports/tolerances.py PRECISION); informational otherwise")


def _listed(config, option: str, known, what: str) -> list[str]:
    raw = config.getoption(option)
    if raw is None:
        return list(known)
    chosen = [v.strip() for v in raw.split(",") if v.strip()]
    unknown = [v for v in chosen if v not in known]
    if unknown or not chosen:
        raise pytest.UsageError(f"{option} {raw}: unknown {what} {', '.join(unknown) or '(none given)'}; "
                                f"known: {', '.join(known)}")
    return chosen


def _runners(config, frameworks: list[str]) -> list[str]:
    """The runner labels to check: every chosen framework in every chosen mode it has."""
    from gradparity.adapters import modes_of

    raw = config.getoption("--modes") or active_profile().modes
    every = list(dict.fromkeys(m for fw in frameworks for m in modes_of(fw)))
    chosen = every if raw.strip() == "all" else [m.strip() for m in raw.split(",") if m.strip()]
    unknown = [m for m in chosen if m not in every]
    if unknown or not chosen:
        raise pytest.UsageError(f"--modes {raw}: unknown mode {', '.join(unknown) or '(none given)'}; known: "
                                f"{', '.join(every)}, or all")
    return [fw if m == "eager" else f"{fw}.{m}" for fw in frameworks for m in chosen if m in modes_of(fw)]


def _usable_report_dir(raw: str) -> Path:
    """The report directory, created now; a clear one-line error if it cannot be."""
    path = Path(raw)
    if path.exists() and not path.is_dir():
        raise pytest.UsageError(f"--report-dir {raw}: exists and is not a directory")
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise pytest.UsageError(f"--report-dir {raw}: {existing} is a file, not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".probe-{uuid.uuid4().hex}"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise pytest.UsageError(f"--report-dir {raw}: cannot write there ({e.strerror or e})") from None
    return path


def _threads_per_worker():
    """In an xdist worker: cores // workers compute threads per framework (unless
    the user chose). The cases are small, and torch's OpenMP pool spin-waits
    between operations: with one worker per core, each worker's pool took the
    other's core (measured on 2 cores: -n 2 took 29.5 s with the default pools,
    24.7 s with one thread each). Read when the frameworks are first imported,
    which is later."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS"):
        os.environ.setdefault(var, str(max(1, cores // workers)))


def _load_user_plugins():
    """Modules that add layers, builders or runners, from the ``gradparity.plugins``
    entry point group (a package's way; a conftest or ``-p module`` works too)."""
    for ep in importlib.metadata.entry_points(group="gradparity.plugins"):
        try:
            ep.load()
        except Exception as e:  # noqa: BLE001 - say which plugin, not a traceback
            raise pytest.UsageError(f"gradparity plugin {ep.name} ({ep.value}) failed to load: {e}") from None


class _State:
    """What the plugin knows about this session (kept in the config's stash). Nothing of
    gradparity is loaded until ``activate()``: a gradparity option, or a gradparity test."""

    def __init__(self, config):
        self.config = config
        self.active = False
        self.frameworks: list[str] = []
        self.runners: list[str] = []  # the frameworks in their modes: "torch", "torch.compile", ...
        self.dtypes: list[str] = []
        self.report_dir: Path | None = None
        self.run_dir: Path | None = None
        worker = getattr(config, "workerinput", None)
        self.run = worker["gradparity_run"] if worker and "gradparity_run" in worker else uuid.uuid4().hex[:12]
        self.recorder = None
        self.collected: list[str] = []
        self.finished: set[str] = set()
        self.crashed: list[str] = []
        self.written = None

    def activate(self) -> _State:
        """Load the user's plugins, check the options and prepare the report directory (once)."""
        if self.active:
            return self
        self.active = True
        config = self.config
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        _load_user_plugins()
        from gradparity.adapters import ADAPTERS
        from gradparity.reference import DTYPES

        self.frameworks = _listed(config, "--frameworks", list(ADAPTERS), "framework")
        self.dtypes = _listed(config, "--dtypes", list(DTYPES), "dtype")
        self.runners = _runners(config, self.frameworks)
        raw = config.getoption("--report-dir")
        self.report_dir = _usable_report_dir(raw) if raw else None
        worker = getattr(config, "workerinput", None)
        if worker:
            _threads_per_worker()
        from gradparity.reports.recording import Recorder, run_dir

        strict = config.getoption("--strict-precision")
        if self.report_dir:
            self.run_dir = run_dir(self.report_dir, self.run)
            self.recorder = Recorder(self.run_dir / "rows", worker["workerid"] if worker else "main",
                                     self.run_dir / "cases", self.report_dir / "cases", strict)
        else:
            cache = getattr(config, "cache", None)
            cases = Path(str(cache.mkdir("gradparity-cases"))) if cache else Path(".gradparity-cases")
            self.recorder = Recorder(None, "main", cases, cases, strict)
        return self


_STATE = pytest.StashKey[_State]()
# Options whose use makes a session gradparity's (their defaults say nothing).
_OPTIONS = ("--report-dir", "--frameworks", "--dtypes", "--modes", "--gradparity-shard", "--strict-precision")


def _state(config) -> _State:
    """The session's state, activated: what a gradparity test or hook needs."""
    return config.stash[_STATE].activate()


def pytest_configure(config):
    global _active_profile
    config.addinivalue_line("markers", "gradparity_matrix: parametrize layer, framework, dtype from the catalogue")
    config.addinivalue_line("markers", "gradparity_explore: hypothesis draws beyond the plan (profiles that explore)")
    _active_profile = config.getoption("--gradparity-profile")
    state = config.stash[_STATE] = _State(config)
    if any(config.getoption(o) not in (None, False) for o in _OPTIONS) or _active_profile != "ci":
        state.activate()  # checked now: a bad option is one line before anything runs


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node):  # xdist controller: workers write shards of the same run
    node.workerinput["gradparity_run"] = node.config.stash[_STATE].run


def pytest_generate_tests(metafunc):
    if metafunc.definition.get_closest_marker("gradparity_matrix") is None:
        return
    state = _state(metafunc.config)
    from gradparity.reference import LAYERS

    metafunc.parametrize("layer, framework, dtype", [
        pytest.param(layer, fw, dt, id=f"{layer}-{fw}-{dt}")
        for layer in LAYERS for fw in state.runners for dt in state.dtypes])


def pytest_collection_modifyitems(config, items):
    """Each framework's tests together, in registration order (torch, the cheaper
    import, first): with work stealing, a worker that only meets one framework
    never imports the other."""
    state = config.stash[_STATE]
    if not state.active:
        return  # nothing of gradparity's in this session
    rank = {fw: i for i, fw in enumerate(state.runners)}

    def framework(item):  # other tests keep their place before gradparity's
        if item.get_closest_marker("gradparity_matrix") is None:
            return -1
        return rank.get(item.callspec.params.get("framework"), -1)

    items[:] = sorted(items, key=framework)
    if not active_profile().explore:
        exploring = [item for item in items if item.get_closest_marker("gradparity_explore") is not None]
        if exploring:
            config.hook.pytest_deselected(items=exploring)
            items[:] = [item for item in items if item.get_closest_marker("gradparity_explore") is None]
    shard = config.getoption("--gradparity-shard")
    if shard:
        k, n = _shard(shard)
        kept = [item for item in items if _shard_of(item.nodeid, n) == k - 1]
        config.hook.pytest_deselected(items=[item for item in items if _shard_of(item.nodeid, n) != k - 1])
        items[:] = kept


def _shard(text: str) -> tuple[int, int]:
    """K/N, or a usage error naming the option."""
    from gradparity.reports.cli import parse_shard

    try:
        return parse_shard(text)
    except ValueError as e:
        raise pytest.UsageError(f"--gradparity-shard {text}: {e}") from None


def _shard_of(nodeid: str, n: int) -> int:
    """A test's part, from its id alone: the same on every machine and in every process."""
    return int.from_bytes(hashlib.sha256(nodeid.encode()).digest()[:8], "little") % n


@pytest.hookimpl(wrapper=True, trylast=True)
def pytest_runtest_call(item):
    """Hypothesis seeds a parametrized test by its node id, which changes with the
    rootdir and the way the suite was started: gradparity's hypothesis tests are
    keyed by their name alone (set after hypothesis' own plugin sets the node id),
    so pytest and ``gradparity run`` draw the same examples."""
    inner = getattr(getattr(item.obj, "hypothesis", None), "inner_test", None)
    if inner is not None and getattr(item.module, "__name__", "").split(".")[-1] in _OWN_MODULES:
        inner._hypothesis_internal_add_digest = f"gradparity:{item.name}".encode()
    return (yield)


_OWN_MODULES = ("test_gradients", "test_canary", "test_reference")


@pytest.fixture(scope="session")
def recorder(request):
    """The process's ``recording.Recorder``: a test hands it each case's rows."""
    return _state(request.config).recorder


class Exploration:
    """How a hypothesis test records its rows: every example's as it comes, until one
    fails; that first failing example is recorded ("first failing"); the examples
    hypothesis then tries while shrinking are not rows; the last failing one, the
    minimal example hypothesis settles on and replays, is recorded at the end
    ("minimal"). So a group's counts are the counts of the cases drawn."""

    def __init__(self, recorder):
        self.recorder, self.failed, self.pending = recorder, None, None

    def add(self, rows: list[dict], case) -> list[dict]:
        bad = any(r["status"] in ("fail", "error") for r in rows)
        if self.failed is None:
            if bad:
                self.failed = case.id
                return self.recorder.add(rows, case, example="first failing")
            return self.recorder.add(rows, case)
        if bad:
            self.pending = (rows, case)
        return rows

    def close(self) -> None:
        if self.pending is not None and self.pending[1].id != self.failed:
            self.recorder.add(*self.pending, example="minimal")


@pytest.fixture
def explored(recorder):
    """An ``Exploration`` for one hypothesis test (function-scoped: it lasts every example)."""
    log = Exploration(recorder)
    yield log
    log.close()


@pytest.fixture(scope="session")
def runner_for():
    """``runner_for(label)``: the runner ("torch", "torch.compile", ...), or a skip saying why its
    framework (or mode) is missing."""
    from gradparity.adapters import runner as runner_of

    def get(name):
        runner = runner_of(name)
        ok, why = getattr(runner, "mode_available", runner.available)()
        if not ok:
            pytest.skip(why)
        return runner

    return get


def failure_message(case, rows) -> str:
    lines = [f"{case.describe()} (case {case.id})"]
    for r in rows:
        lines.append(f"  {r['framework']} {r['kind']} {r['name']}{r['shape']}: {r['status']}, "
                     f"err_eps={r['err_eps']:.3g}, atol={r['atol']:.3g}, "
                     f"max_ulp_err={r.get('max_ulp_err', float('nan')):.3g}: {r['detail']}")
    reproduce = next((r["reproduce"] for r in rows if r["reproduce"]), "")
    if reproduce:
        lines.append(f"  reproduce: {reproduce}")
    return "\n".join(lines)


# ---- knowing whether the run finished (the controller sees every test's reports)

def pytest_collection_finish(session):
    session.config.stash[_STATE].collected = [item.nodeid for item in session.items]


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_node_collection_finished(node, ids):
    state = node.config.stash[_STATE]
    if not state.collected:
        state.collected = list(ids)


@pytest.hookimpl(optionalhook=True)
def pytest_handlecrashitem(crashitem, report, sched):
    sched.config.stash[_STATE].crashed.append(crashitem)


class _Finished:
    """Counts tests whose teardown was reported: those that ran to the end."""

    def __init__(self, state):
        self.state = state

    def pytest_runtest_logreport(self, report):
        if report.when == "teardown":
            self.state.finished.add(report.nodeid)


def pytest_sessionstart(session):
    config = session.config
    if not hasattr(config, "workerinput"):
        config.pluginmanager.register(_Finished(config.stash[_STATE]), "gradparity-finished")


def _run_status(session, exitstatus, state) -> dict:
    missing = [n for n in state.collected if n not in state.finished]
    why = []
    if exitstatus == pytest.ExitCode.INTERRUPTED:
        why.append("interrupted")
    if state.crashed:
        why.append(f"{len(state.crashed)} test(s) crashed their worker: {', '.join(state.crashed[:5])}")
    if missing and not why:
        why.append("some tests did not finish")
    return {"partial": bool(why or missing), "missing": missing, "why": "; ".join(why)}


@contextlib.contextmanager
def _holding_interrupts():
    """Ctrl-C pressed again while a partial report is written waits until it is written
    (an impatient second press would otherwise lose what the first was saving)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, lambda signum, frame: None)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session, exitstatus):
    """Write the report, before xdist tears its workers down: a second Ctrl-C while
    it waits for them no longer loses the report of the first."""
    config = session.config
    state = config.stash.get(_STATE, None)
    if state is None or not state.active:
        return
    if hasattr(config, "workerinput") or state.report_dir is None:
        return
    if not state.collected and not (state.run_dir and state.run_dir.exists()):
        return  # nothing of gradparity's ran (another project's tests, or nothing selected)
    from gradparity.reports.recording import finish

    with _holding_interrupts():
        state.written = finish(state.run_dir, state.report_dir, _run_status(session, exitstatus, state),
                               {"profile": active_profile().name, "floors": active_profile().floors},
                               state.recorder.strict_precision)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    state = config.stash.get(_STATE, None)
    if state is not None and state.recorder is not None:
        state.recorder.close()  # a process that got here finished its last case


def pytest_report_header(config):
    """A run that never wrote its report (its main process was killed) is said at the next run's start."""
    state = config.stash.get(_STATE, None)
    if state is None or state.report_dir is None:
        return None
    from gradparity.reports.recording import leftovers

    return [f"gradparity: {state.report_dir} holds {left['rows']} rows of run {left['run']} (last write "
            f"{left['when']}), which stopped before writing its report: gradparity merge {state.report_dir} "
            "--recover writes them as a partial report" for left in leftovers(state.report_dir, state.run)]


def pytest_terminal_summary(terminalreporter, config):
    state = config.stash.get(_STATE, None)
    written = state.written if state else None
    if written is None:
        return
    from gradparity.reports.terminal import summary_lines

    terminalreporter.write_sep("-", "gradparity report")
    for line, colour in summary_lines(written, verbose=config.getoption("verbose") > 0):
        terminalreporter.write_line(line, **({colour: True} if colour else {}))
