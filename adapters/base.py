"""The runner protocol, and the skeleton every framework adapter shares.

A runner turns a Case into named outputs, ``{"out": {name: array}, "grad":
{name: array}}`` (plus ``"drawn"``: random data the runner drew itself, such as
a dropout mask, which the oracle is then evaluated on). The NumPy oracle is
one runner; each framework adapter is another; a user's code can be a third.

A framework adapter keeps, per catalogue layer, one *builder*: it builds the
framework's real layer (the classes users use) from the case and returns a
``Built``: how to apply it, and which framework parameters receive gradients
and what canonical names those gradients stand for. ``FrameworkAdapter.run``
does the rest once for every framework: tensors in, forward, ``loss = sum_i
<out_i, g_i>``, the framework's own backward, gradients mapped back to
canonical names. Frameworks are imported lazily, on first use.
"""

from __future__ import annotations

import contextlib
import copy
import signal
import threading
from dataclasses import dataclass
from typing import Any, Callable, Protocol

import numpy as np

from ..reference import COT, GRAD, OUT, Case, Convention, differentiable
from ..reference.oracle import layer_of


class NotApplicable(Exception):
    """The configuration cannot be expressed in this framework (the row says why)."""


class Runner(Protocol):
    name: str

    def available(self) -> tuple[bool, str]:
        """(True, "") when the runner can run here; else (False, why), for a skip message."""

    def version(self) -> str: ...

    def convention(self, layer: str) -> Convention | None:
        """The values of the layer's convention attributes this runner follows, and why."""

    def run(self, case: Case) -> dict:
        """``{"out": {...}, "grad": {...}}``; raise NotApplicable when the case cannot be expressed."""

    # Optional: ``refusal(case) -> str | None``, why the runner cannot express the case's
    # configuration, judged from its attributes, dtype and shapes alone (never its values):
    # the strategies then draw only cases it can run. A runner without it is asked nothing.
    # Optional too: ``refusals(case) -> tuple[str, ...]``, every reason that applies, so the
    # coverage census can name the one an edge's draws all share.


def same(v):
    """The layout conversion for a gradient already in the canonical layout."""
    return v


@dataclass(frozen=True)
class Param:
    """A framework parameter that receives a gradient, and the canonical names it
    stands for. ``to_canonical(grad)`` converts the framework's gradient (NumPy)
    into ``{name: array}``: one name for a plain weight; several for a packed
    one (torch's ``in_proj_weight`` is Wq, Wk, Wv). Several canonical arrays held
    as one framework tensor (Keras' one LSTM bias for PyTorch's two) map the
    gradient to each, so each side is checked on its own parameters."""

    source: Any
    names: tuple
    to_canonical: Callable[[np.ndarray], dict]


def param(source, name: str, convert: Callable = same) -> Param:
    """A parameter holding one canonical array, in a layout ``convert`` undoes."""
    return Param(source, (name,), lambda g: {name: convert(g)})


@dataclass(frozen=True)
class Built:
    """A framework layer built from a case. ``apply(tensors)`` runs its forward on
    the case's arrays as framework tensors and returns the output, or
    ``{output name: tensor}`` for a layer with several; ``params`` are its
    parameters; ``drawn()`` (after apply) returns random data the layer drew.
    A whole model also gives ``taps()`` (after apply): its layers' outputs by step
    name, as the framework computed them inside the forward pass, whose values and
    cotangents are compared (kinds ``out`` and ``cot``) after ``tap_to_canonical(name,
    array)`` puts them in the oracle's layout."""

    apply: Callable[[dict], Any]
    params: tuple = ()
    drawn: Callable[[], dict] | None = None
    taps: Callable[[], dict] | None = None
    tap_to_canonical: Callable[[str, np.ndarray], np.ndarray] = lambda name, array: array


def stateless(fn: Callable) -> Callable:
    """A builder for a layer without parameters, from ``fn(tensors, attrs, dtype) -> output``."""
    return lambda t, a, dtype: Built(lambda tensors: fn(tensors, a, dtype))


def seed_of(array: np.ndarray) -> int:
    """A seed for a framework's own random draw (dropout), a function of the case's
    numbers: a replay of the case draws the same. A Python int below 2**31 - 2,
    which both frameworks take as it is."""
    head = np.ascontiguousarray(array).tobytes()[:8].ljust(8, b"\0")
    return int.from_bytes(head, "little") % (2**31 - 2)


def named_outputs(out, names: tuple | None, framework: str) -> dict:
    """A builder's result as ``{output name: tensor}``: a layer with one output may
    return it bare; one with several returns exactly its output names; a
    forward-only entry (names None) returns the names it chooses."""
    if names is None:
        if not isinstance(out, dict):
            raise TypeError(f"the {framework} builder of a forward-only layer must return {{name: tensor}}")
        return out
    if not isinstance(out, dict):
        if len(names) != 1:
            raise TypeError(f"the {framework} builder returned one output; the layer has {', '.join(names)}")
        return {names[0]: out}
    if set(out) != set(names):
        raise TypeError(f"the {framework} builder returned outputs {sorted(out)}; the layer has {list(names)}")
    return out


class Builders:
    """One framework's builders, by catalogue layer: the function that builds the
    layer (``builder(tensors, attrs, dtype) -> Built``), the ``Convention`` the
    framework follows where the layer's math leaves a choice, the configurations
    of it the framework cannot express (``refuses(case) -> str | None``, from the
    case's attributes, dtype and shapes, never its values), and the layers it
    cannot express at all, with the reason. A builder registers itself with the
    decorator ``@builders("conv2d", convention=..., refuses=...)``."""

    def __init__(self, framework: str):
        self.framework = framework
        self.build: dict[str, Callable] = {}
        self.conventions: dict[str, Convention] = {}
        self.refuses: dict[str, Callable] = {}
        self.inexpressible: dict[str, str] = {}

    def __call__(self, layer: str, *, convention: Convention | None = None,
                 refuses: Callable | None = None) -> Callable:
        def add(fn: Callable) -> Callable:
            self._claim(layer)
            self.build[layer] = fn
            if convention is not None:
                self.conventions[layer] = convention
            if refuses is not None:
                self.refuses[layer] = refuses
            return fn

        return add

    def stacks(self, stack: dict, *, lstm_refuses: Callable | None = None) -> None:
        """Register the deep recurrent layers from one stack builder per cell kind ({"rnn": fn,
        "lstm": fn, "gru": fn}, each ``fn(tensors, attrs, dtype, layers=None, directions=None)``,
        None for the case's own num_layers and bidirectional): ``stacked_<kind>`` as the case
        says, ``bidirectional_<kind>`` one layer in both directions."""
        for kind, fn in stack.items():
            refuses = lstm_refuses if kind == "lstm" else None
            self(f"stacked_{kind}", refuses=refuses)(fn)
            self(f"bidirectional_{kind}", refuses=refuses)(
                lambda t, a, dtype, fn=fn: fn(t, a, dtype, 1, 2))

    def not_expressible(self, layer: str, reason: str) -> None:
        """Declare that no configuration of ``layer`` can be expressed in this framework."""
        self._claim(layer)
        self.inexpressible[layer] = reason

    def forget(self, layer: str) -> None:
        """Remove what is registered for ``layer`` (a test's temporary layer)."""
        for table in (self.build, self.conventions, self.refuses, self.inexpressible):
            table.pop(layer, None)

    def covers(self, layer: str) -> bool:
        """Whether ``layer`` has a builder here, or is declared not expressible."""
        return layer in self.build or layer in self.inexpressible

    def _claim(self, layer: str) -> None:
        if self.covers(layer):
            raise ValueError(f"{self.framework} already has a builder for {layer!r}")


# A compiled mode's case must finish within this (seconds): a compiler that hangs is an error row.
COMPILED_CASE_LIMIT = 300.0


class FrameworkAdapter:
    """What every framework adapter shares. A subclass sets ``name`` and provides
    ``tensor``, ``forward_backward``, ``available`` and ``version``; ``builders``
    (a ``Builders``) holds its builders and conventions per layer (users add to
    it with ``register_builder``).

    **Execution modes.** ``modes`` names the ways the framework can run a layer's
    forward and backward (``"eager"`` first, the default); ``with_mode(mode)`` is
    the same adapter running in that mode (its builders, conventions and known
    divergences are the framework's: ``name`` stays the framework's), and
    ``label`` names it in rows and test ids: ``"torch"``, ``"torch.compile"``."""

    name = "framework"
    modes: tuple = ("eager",)
    mode = "eager"
    # {mode: {layer: Convention}}: where a compiled mode's kernels choose otherwise than eager's
    # at a kink or a NaN (the values override the eager convention's; the reason is added to it)
    mode_conventions: dict = {}

    def __init__(self, builders: Builders):
        self.builders = builders
        self._variants = {"eager": self}

    @property
    def label(self) -> str:
        return self.name if self.mode == "eager" else f"{self.name}.{self.mode}"

    def with_mode(self, mode: str) -> FrameworkAdapter:
        """This adapter in execution mode ``mode`` (one of ``modes``; one object per mode)."""
        if mode not in self.modes:
            raise ValueError(f"{self.name} has no mode {mode!r}; its modes: {', '.join(self.modes)}")
        base = self._variants["eager"]
        if mode not in base._variants:
            variant = copy.copy(base)
            variant.mode = mode
            base._variants[mode] = variant
            variant._variants = base._variants
        return base._variants[mode]

    def mode_available(self) -> tuple[bool, str]:
        """Whether this mode can run here (the framework is there, and what the mode needs)."""
        return self.available()

    def convention(self, layer: str) -> Convention | None:
        eager = self.builders.conventions.get(layer)
        other = self.mode_conventions.get(self.mode, {}).get(layer)
        if other is None or eager is None:
            return eager
        return Convention({**eager.values, **other.values}, f"{eager.reason}. Under {self.mode}: {other.reason}")

    def refusals(self, case: Case) -> tuple[str, ...]:
        """Every reason this framework cannot express the case's configuration (none when it
        can), from its attributes, dtype and shapes alone: the strategies ask before drawing
        any value, and ``run`` raises NotApplicable with the same words. A builder's
        ``refuses`` returns one reason, None, or a list of every reason that applies."""
        if case.layer not in self.builders.build:
            return (self.builders.inexpressible.get(case.layer, f"no {self.name} builder for {case.layer}"),)
        refuses = self.builders.refuses.get(case.layer)
        why = refuses(case) if refuses is not None else None
        return (why,) if isinstance(why, str) else tuple(why or ())

    def refusal(self, case: Case) -> str | None:
        """The reasons of ``refusals`` in one sentence, None when the framework can run the case."""
        return "; and ".join(self.refusals(case)) or None

    def run(self, case: Case) -> dict:
        why = self.refusal(case)
        if why is not None:
            raise NotApplicable(why)
        build = self.builders.build[case.layer]
        layer = layer_of(case)
        wanted = differentiable(case)
        tensors = {n: self.tensor(a, case.dtype, watch=n in wanted) for n, a in case.arrays.items()}
        built = build(tensors, case.attrs, self.native_dtype(case.dtype))
        claimed = [n for p in built.params for n in p.names]
        inputs = [n for n in wanted if n not in claimed]
        sources = [p.source for p in built.params] + [tensors[n] for n in inputs]

        def forward(ts):
            return named_outputs(built.apply(ts), layer.output_names, self.name)

        with _time_limit(COMPILED_CASE_LIMIT if self.mode != "eager" else None, self.label):
            outs, grads, tapped = self.forward_backward(forward, tensors, case.cotangents, sources, case.dtype,
                                                        built.taps)
        canonical = {}
        for p, g in zip(built.params, grads):
            canonical.update(p.to_canonical(g))
        canonical.update(zip(inputs, grads[len(built.params):]))
        result = {OUT: outs, GRAD: {n: np.asarray(canonical[n]) for n in wanted if n in canonical}}
        if tapped:  # a whole model: each layer's output, and the cotangent arriving there
            result[OUT].update({n: built.tap_to_canonical(n, v) for n, v in tapped[OUT].items()})
            result[COT] = {n: built.tap_to_canonical(n, g) for n, g in tapped[COT].items()}
        if built.drawn is not None:
            result["drawn"] = built.drawn()
        return result

    # ---- what each framework provides
    def native_dtype(self, dtype: str):
        """The dtype as the framework's layers take it (builders get this)."""
        return dtype

    def tensor(self, array: np.ndarray, dtype: str, watch: bool):
        """The array as a framework tensor (integers stay integers)."""
        raise NotImplementedError

    def forward_backward(self, forward, tensors: dict, cotangents: dict, sources: list, dtype: str, taps=None):
        """Run ``forward(tensors) -> {name: tensor}`` under the framework's autodiff,
        take ``loss = sum_i <out_i, g_i>`` and return (outputs as NumPy by name,
        [d loss / d source as NumPy, zeros where unconnected], and for ``taps``
        ({"out": {name: value}, "cot": {name: d loss / d value}}, NumPy, or None))."""
        raise NotImplementedError


# A test seam: one layer of a whole model off on purpose, to prove the localization names
# it. {"step": "3:dense", "direction": "forward" | "backward", "scale": 1.001}: the step's
# output (forward), or the gradient it sends back to its input (backward), scaled. None in
# every real run; a model builder reads it when it builds.
FAULT: dict | None = None


@contextlib.contextmanager
def _time_limit(seconds: float | None, label: str):
    """Raise TimeoutError in the main thread when the block runs longer than ``seconds`` (a
    compiled mode's case: a hung compiler becomes an error row, with its case saved)."""
    if seconds is None or threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGALRM"):
        yield
        return

    def expire(signum, frame):
        raise TimeoutError(f"{label}: the case ran longer than {seconds:g} s (the time limit of a compiled mode)")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)

