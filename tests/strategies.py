"""Drawing cases from the catalogue: one routine, two sources of choices.

``draw_case(source, layer, dtype)`` draws a whole Case: dims first, then
attributes, then (unless the runner refuses the configuration) arrays and the
cotangents. Every structural choice (a size, an attribute, which array holds a
NaN) goes through a small ``Source``:

* ``Hypothesis(draw)``: hypothesis' own choices, so it can explore and shrink
  (the ``cases`` strategy: the thorough profile, the canary, the oracle's
  finite-difference check);
* ``Seeded(seed)``: a NumPy generator, for the planned cases of the ci profile
  (``plan.py``): the same cases on every machine and from every entry point.

Array values come from a NumPy generator seeded by the source in both, mixing in
the catalogue's edge values (kinks, saturation, ties, pred == target) on
purpose; ``edges=False`` draws values in general position, which is what the
finite-difference check of the oracle needs (a central difference across a
kink measures nothing). ``force`` sets dims and attributes (and the kind of
special value) a draw must have: how a plan lands on a declared ``Edge``;
``lean=True`` makes the edge values of the specs frequent (of arrays and
of float attributes; sizes keep their odds: a batch of 0 is an edge of its own),
for the edges ``force`` cannot set (an exact tie, a kink).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
from hypothesis import reject
from hypothesis import strategies as st

from gradparity.reference import LAYERS, Case
from gradparity.reference.case import as_float64
from gradparity.reference.oracle import named_outputs, ieee
from gradparity.reference.spec import Choice, Drawn, Float, Int, Labels, Lengths, Mask, Real, Shape

SPECIAL = ("nonfinite", "subnormal", "tiny")  # the kinds of special value a case may hold
SPECIAL_ODDS = 5  # one case in SPECIAL_ODDS holds one kind
EDGE_SIZE_ODDS = 10  # one size in EDGE_SIZE_ODDS is one of its declared edge sizes
EMPTY_ODDS = 10  # one shape in EMPTY_ODDS has a side of 0, where the spec allows it
ATTEMPTS = 32  # configurations a strategy draws before giving up on finding one the runner can express


# ---- sources of choices

class Hypothesis:
    """Choices drawn by hypothesis (explored and shrunk by it)."""

    def __init__(self, draw):
        self._draw = draw

    def integer(self, lo: int, hi: int) -> int:
        return self._draw(st.integers(lo, hi))

    def choice(self, values):
        return self._draw(st.sampled_from(list(values)))

    def floating(self, lo: float, hi: float) -> float:
        return self._draw(st.floats(lo, hi, allow_nan=False, allow_infinity=False, allow_subnormal=False))

    def seed(self) -> int:
        return self._draw(st.integers(0, 2**32 - 1))


class Seeded:
    """Choices from a NumPy generator: the same seed gives the same case everywhere.
    Wide positive ranges (a learning rate, an eps) are drawn log-uniformly."""

    def __init__(self, seed: int):
        self._rng = np.random.default_rng(seed)

    def integer(self, lo: int, hi: int) -> int:
        return int(self._rng.integers(lo, hi + 1))

    def choice(self, values):
        values = list(values)
        return values[int(self._rng.integers(len(values)))]

    def floating(self, lo: float, hi: float) -> float:
        if lo > 0 and hi / lo > 100:
            return float(math.exp(self._rng.uniform(math.log(lo), math.log(hi))))
        return float(self._rng.uniform(lo, hi))

    def seed(self) -> int:
        return int(self._rng.integers(2**32))


def one_in(source, n: int) -> bool:
    return source.integer(0, n - 1) == 0


# ---- rounding to the case dtype

def _round(a: np.ndarray, dtype: str) -> np.ndarray:
    """Round to the case dtype. Subnormals become 0 here: TensorFlow flushes them to
    zero on CPU, which would blur every ordinary case; ``_special`` draws them on
    purpose instead, in cases the report can point at."""
    a = a.astype(dtype)
    return np.where(np.abs(a) < np.finfo(dtype).tiny, np.zeros((), dtype), a)


def _round_attr(value, spec, dtype: str):
    """A float attribute rounded to the dtype, a subnormal one flushed to 0 as arrays are."""
    return float(_round(np.asarray(value, dtype=np.float64), dtype)) if isinstance(spec, Float) else value


# ---- sizes and attributes

def _size(source, spec, dims):
    if isinstance(spec, Shape):
        ndim = source.integer(spec.min_dims, spec.max_dims)
        shape = tuple(source.integer(max(spec.min_side, 1), spec.max_side) for _ in range(ndim))
        if spec.min_side == 0 and shape and one_in(source, EMPTY_ODDS):  # a zero-size array
            at = source.integer(0, len(shape) - 1)
            shape = tuple(0 if i == at else s for i, s in enumerate(shape))
        return shape
    value = source.integer(spec.lo, spec.hi)
    if spec.edges and one_in(source, EDGE_SIZE_ODDS):  # an edge size on purpose
        value = source.choice(spec.edges)
    other = dims.get(spec.like)
    if other is not None and spec.lo <= other <= spec.hi and source.integer(0, 1):
        value = other  # equal widths on purpose: square weights
    return value


def attribute(source, spec, *, edges: bool = True, lean: bool = False):
    """One attribute declared as ``Int``, ``Float`` or ``Choice`` (a ``Drawn`` one is
    resolved against the dims first)."""
    if isinstance(spec, Choice):
        return source.choice(spec.values)
    if isinstance(spec, Int):
        return source.integer(spec.lo, spec.hi)
    if isinstance(spec, Float):
        if edges and spec.edges and (lean or source.integer(0, 1)):
            return source.choice(spec.edges)
        return source.floating(spec.lo, spec.hi)
    raise TypeError(f"unknown attribute spec {spec!r}")


def _forced(source, value):
    """A forced dim or attribute: a value, or one of a ``Choice``'s."""
    return source.choice(value.values) if isinstance(value, Choice) else value


# ---- array values (one NumPy generator per array)

def _real(rng, spec: Real, shape, arrays, *, edges: bool, lean: bool) -> np.ndarray:
    a = rng.uniform(spec.lo, spec.hi, size=shape)
    if not edges:
        return _sum_to_one(rng, spec, a)
    special = [e for e in spec.edges if spec.lo <= e <= spec.hi]
    pick = rng.random(shape)
    if special:  # edge values on purpose (a third of the elements; most of them when lean)
        a = np.where(pick < (0.7 if lean else 0.35), rng.choice(special, size=shape), a)
    if spec.ties and rng.integers(2):  # a coarse grid: equal values inside one window or reduction
        grid = rng.integers(int(np.ceil(spec.lo)), int(spec.hi) + 1, size=shape).astype(np.float64)
        a = np.where(rng.random(shape) < 0.5, grid, a)
    if spec.spread and rng.integers(2):  # (nearly) constant: a tiny variance on purpose
        a = _nearly_constant(spec, float(rng.choice(spec.spread)), float(a.flat[0]) if a.size else 0.0, rng, shape)
    if spec.like is not None and spec.like in arrays and rng.integers(2):  # equal to another array here and there
        a = np.where(rng.random(shape) < 0.5, arrays[spec.like].astype(np.float64), a)
    return _sum_to_one(rng, spec, a)


def _sum_to_one(rng, spec: Real, a: np.ndarray) -> np.ndarray:
    """Now and then, ``a`` divided by its sums along ``spec.sum_to_one`` (where they are not 0)."""
    if spec.sum_to_one is None or not rng.integers(2):
        return a
    total = a.sum(axis=spec.sum_to_one, keepdims=True)
    return np.where(total > 0, a / np.where(total > 0, total, 1.0), a)


def _nearly_constant(spec: Real, spread: float, center: float, rng, shape) -> np.ndarray:
    """``center + spread (hi - lo) / 2 * u``, ``u`` uniform in [-1, 1], kept in [lo, hi]."""
    offsets = spread * (spec.hi - spec.lo) / 2 * rng.uniform(-1.0, 1.0, size=shape)
    return np.clip(center + offsets, spec.lo, spec.hi)


def _rate(spec: Mask, attrs: dict) -> float:
    return attrs[spec.rate] if isinstance(spec.rate, str) else spec.rate


def _mask(rng, spec: Mask, shape, attrs, *, edges: bool) -> np.ndarray:
    """0/1 keep-mask: all kept when the rate is 0; else each element kept with
    probability 1 - rate, plus all-kept and all-dropped masks on purpose, and
    (``lines``) masks with whole lines along the last axis dropped."""
    rate = _rate(spec, attrs)
    if rate == 0:
        return np.ones(shape)
    pick = "random"
    if edges:
        pick = ["random", "random", "kept", "dropped", "lines"][int(rng.integers(4 + spec.lines))]
        if pick in ("kept", "dropped"):
            return np.full(shape, 1.0 if pick == "kept" else 0.0)
    mask = (rng.random(shape) >= rate).astype(np.float64)
    if pick == "lines":  # whole lines along the last axis dropped, at least one
        lines = np.asarray(rng.random(shape[:-1]) < 0.5)
        lines.flat[rng.integers(lines.size)] = True
        mask[lines] = 0.0
    return mask


def _lengths(rng, steps: int, shape, *, edges: bool) -> np.ndarray:
    """Lengths in [1, steps]; all full and all 1 on purpose, and 1 and full mixed in."""
    if edges:
        pick = ["random", "random", "full", "one"][int(rng.integers(4))]
        if pick != "random":
            return np.full(shape, steps if pick == "full" else 1, dtype=np.int64)
        mixed = rng.integers(1, steps + 1, size=shape)
        ends = rng.choice([1, steps], size=shape)
        return np.where(rng.random(shape) < 0.5, ends, mixed).astype(np.int64)
    return rng.integers(1, steps + 1, size=shape).astype(np.int64)


def _special(source, layer, arrays: dict, dtype: str, kind: str | None) -> dict:
    """Now and then (always for a forced ``kind``), special values at a few drawn
    positions of one array: NaN, +Inf and -Inf in an input where the layer declares
    them meaningful (``Layer.nonfinite``); subnormals of the case dtype (kept, not
    flushed as ``_round`` does elsewhere) or magnitudes near sqrt(tiny), whose
    products are subnormal (an intermediate result a framework may flush to zero),
    in those inputs or, for every other layer with a gradient, in any
    differentiable array."""
    names, kinds = list(layer.nonfinite), SPECIAL
    if not names and layer.vjp is not None:  # optimizer trajectories: not yet (README, "Special values")
        names = [n for n, spec in layer.arrays.items() if spec.differentiable]
        kinds = tuple(k for k in SPECIAL if k != "nonfinite")
    names = [n for n in names if n in arrays and arrays[n].size]
    if kind is None and (not names or not one_in(source, SPECIAL_ODDS)):
        return arrays
    if not names or (kind is not None and kind not in kinds):
        return arrays  # the layer takes no such value: a plan's edge that cannot be drawn says so
    kind = kind or source.choice(kinds)
    name = source.choice(names)
    rng = np.random.default_rng(source.seed())
    a = arrays[name].copy()
    at = rng.choice(a.size, size=min(int(rng.integers(1, 4)), a.size), replace=False)
    if kind == "nonfinite":
        a.flat[at] = rng.choice([np.nan, np.inf, -np.inf], size=len(at))
        return {**arrays, name: a}
    if rng.integers(2):  # the whole array that small: sums of subnormal products
        at = np.arange(a.size)
    tiny = float(np.finfo(dtype).tiny)
    size = tiny if kind == "subnormal" else np.sqrt(tiny)
    a.flat[at] = (rng.choice([-1.0, 1.0], len(at)) * size * 2.0 ** -rng.uniform(0, 20, len(at))).astype(dtype)
    return {**arrays, name: a}


def _present(spec, attrs) -> bool:
    """False for an array its ``when`` leaves out of a case with these attributes."""
    return spec.when is None or bool(spec.when(attrs))


def _placeholder(spec, shape, dtype: str) -> np.ndarray:
    """An array of the right shape and kind, for a runner to judge the configuration by."""
    if isinstance(spec.values, (Labels, Lengths)):
        return np.ones(shape, dtype=np.int64)
    return np.ones(shape, dtype=dtype)


@dataclass(frozen=True)
class Refused:
    """A configuration the runner cannot express, and every reason that applies."""

    reasons: tuple

    @property
    def reason(self) -> str:
        return "; and ".join(self.reasons)


def refusals(runner, case: Case) -> tuple:
    """Why ``runner`` cannot express the case's configuration (empty: it can): its
    ``refusals``, else its ``refusal``; a runner with neither is asked nothing."""
    if hasattr(runner, "refusals"):
        return tuple(runner.refusals(case))
    why = runner.refusal(case) if hasattr(runner, "refusal") else None
    return (why,) if why is not None else ()


def draw_case(source, name: str, dtype: str, *, runner=None, force: dict | None = None, edges: bool = True,
              lean: bool = False, every_optional: bool = False) -> Case | Refused:
    """Draw a valid Case for catalogue layer ``name`` computed in ``dtype``, or ``Refused``
    when ``runner`` cannot express the configuration drawn (judged before any value is drawn).
    An optional array (a bias) is in half the cases, or in all with ``every_optional``."""
    layer, force = LAYERS[name], dict(force or {})
    dims: dict = {}
    for dim, spec in layer.dims.items():
        dims[dim] = _forced(source, force[dim]) if dim in force else _size(source, spec, dims)
    d = SimpleNamespace(**dims)
    specs = {a: spec.range(d) if isinstance(spec, Drawn) else spec for a, spec in layer.attrs.items()}
    # A float attribute is rounded to the dtype too: a float32 kernel compares and
    # multiplies with the float32 value (softplus' threshold, a slope).
    attrs = {a: _round_attr(_forced(source, force[a]) if a in force else
                            attribute(source, spec, edges=edges, lean=lean), spec, dtype) for a, spec in specs.items()}
    present = {n: spec for n, spec in layer.arrays.items()
               if _present(spec, attrs) and (spec.when is not None or not spec.optional or every_optional
                                             or source.integer(0, 1))}
    shapes = {n: spec.shape(d, attrs) for n, spec in present.items()}
    if runner is not None:
        placeholders = {n: _placeholder(spec, shapes[n], dtype) for n, spec in present.items()}
        why = refusals(runner, Case(name, dtype, attrs, placeholders, {}))
        if why:
            return Refused(why)
    arrays: dict = {}
    for arr_name, spec in present.items():
        shape, rng = shapes[arr_name], np.random.default_rng(source.seed())
        if isinstance(spec.values, Labels):
            arrays[arr_name] = rng.integers(0, getattr(d, spec.values.classes), size=shape).astype(np.int64)
        elif isinstance(spec.values, Lengths):
            arrays[arr_name] = _lengths(rng, getattr(d, spec.values.steps), shape, edges=edges)
        elif isinstance(spec.values, Mask):
            arrays[arr_name] = _round(_mask(rng, spec.values, shape, attrs, edges=edges), dtype)
        else:
            arrays[arr_name] = _round(_real(rng, spec.values, shape, arrays, edges=edges, lean=lean), dtype)
    if edges:
        arrays = _special(source, layer, arrays, dtype, force.get("special"))
    return _with_cotangent(name, dtype, attrs, arrays, np.random.default_rng(source.seed()))


@st.composite
def cases(draw, name: str, dtype: str, *, runner=None, edges: bool = True) -> Case:
    """A hypothesis strategy: a valid Case for catalogue layer ``name`` in ``dtype`` that
    ``runner`` (if given) can express; configurations it refuses are drawn again."""
    source = Hypothesis(draw)
    for _ in range(ATTEMPTS):
        case = draw_case(source, name, dtype, runner=runner, edges=edges)
        if isinstance(case, Case):
            return case
    reject()


def _with_cotangent(name, dtype, attrs, arrays, rng) -> Case:
    """Complete a case with one cotangent per output: random and generic, never
    all-ones (ones through softmax give a zero gradient), now and then zero for
    all outputs but one; 1 for a loss, whose own gradient is checked."""
    layer = LAYERS[name]
    if layer.vjp is None:  # forward-only: nothing to differentiate
        return Case(name, dtype, attrs, arrays, {})
    with ieee():
        outs = named_outputs(layer, layer.forward(**as_float64(arrays), **attrs)[0])
    cotangents = {n: np.array(1.0) if layer.loss and out.ndim == 0 else rng.standard_normal(out.shape)
                  for n, out in outs.items()}
    if len(outs) > 1 and rng.random() < 0.25:
        # A loss on one output only (a recurrent layer's last state: the gradient
        # reaching early steps then comes through time alone, and vanishes or explodes).
        kept = list(outs)[rng.integers(len(outs))]
        cotangents = {n: g if n == kept else np.zeros_like(g) for n, g in cotangents.items()}
    return Case(name, dtype, attrs, arrays, {n: _round(np.asarray(g), dtype) for n, g in cotangents.items()})


def fixed_case(name: str, dtype: str, dims: dict, attrs: dict, *, seed: int = 0) -> Case:
    """A case of chosen sizes and attributes with values in general position, for
    benchmarks and examples: no hypothesis, just a seeded generator."""
    return draw_case(Seeded(seed), name, dtype, force={**dims, **attrs}, edges=False, every_optional=True)
