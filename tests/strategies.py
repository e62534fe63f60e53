"""Hypothesis strategies built from the catalogue.

``cases(name, dtype)`` draws a whole Case for a layer: dims first, then
attributes, then arrays and the cotangent. ``edges=True`` (the default) mixes
in the catalogue's edge values (kinks, saturation, ties, pred == target) on
purpose; ``edges=False`` draws values in general position, which is what the
finite-difference check of the oracle needs (a central difference across a
kink measures nothing).
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from gradparity.reference import LAYERS, Case
from gradparity.reference.oracle import _named_outputs, ieee
from gradparity.reference.spec import Choice, Drawn, Float, Int, Labels, Lengths, Mask, Real, Shape


def attribute(spec, *, edges: bool = True) -> st.SearchStrategy:
    """A strategy for one attribute declared as ``Int``, ``Float`` or ``Choice``
    (a ``Drawn`` attribute is resolved against the dims first)."""
    if isinstance(spec, Choice):
        return st.sampled_from(spec.values)
    if isinstance(spec, Int):
        return st.integers(spec.lo, spec.hi)
    if isinstance(spec, Float):
        values = st.floats(spec.lo, spec.hi, allow_nan=False, allow_infinity=False, allow_subnormal=False)
        if edges and spec.edges:
            values = st.one_of(st.sampled_from(spec.edges), values)
        return values
    raise TypeError(f"unknown attribute spec {spec!r}")


def _size(draw, spec, dims):
    if isinstance(spec, Shape):
        shape = draw(hnp.array_shapes(min_dims=spec.min_dims, max_dims=spec.max_dims,
                                      min_side=max(spec.min_side, 1), max_side=spec.max_side))
        if spec.min_side == 0 and shape and draw(st.integers(0, 9)) == 0:  # a zero-size array on purpose
            at = draw(st.integers(0, len(shape) - 1))
            shape = tuple(0 if i == at else s for i, s in enumerate(shape))
        return shape
    value = draw(st.integers(spec.lo, spec.hi))
    if spec.edges and draw(st.integers(0, 9)) == 0:  # one case in ten on an edge size
        value = draw(st.sampled_from(spec.edges))
    other = dims.get(spec.like)
    if other is not None and spec.lo <= other <= spec.hi and draw(st.booleans()):
        value = other  # equal widths on purpose: square weights
    return value


def _round(a: np.ndarray, dtype: str) -> np.ndarray:
    """Round to the case dtype. Subnormals become 0 here: TensorFlow flushes them to
    zero on CPU, which would blur every ordinary case; ``_special`` draws them on
    purpose instead, in cases the report can point at."""
    a = a.astype(dtype)
    return np.where(np.abs(a) < np.finfo(dtype).tiny, np.zeros((), dtype), a)


def _round_attr(value, spec, dtype: str):
    """A float attribute rounded to the dtype, a subnormal one flushed to 0 as arrays are."""
    return float(_round(np.asarray(value, dtype=np.float64), dtype)) if isinstance(spec, Float) else value


def _real(draw, spec: Real, shape, arrays, *, edges: bool) -> np.ndarray:
    if not edges:
        rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
        return _sum_to_one(draw, spec, rng.uniform(spec.lo, spec.hi, size=shape))
    elements = st.floats(spec.lo, spec.hi, allow_nan=False, allow_infinity=False, allow_subnormal=False)
    special = [e for e in spec.edges if spec.lo <= e <= spec.hi]
    if special:
        elements = st.one_of(st.sampled_from(special), elements)
    if spec.ties:  # a coarse grid: equal values inside one window or reduction
        elements = st.one_of(elements, st.integers(int(np.ceil(spec.lo)), int(spec.hi)).map(float))
    a = draw(hnp.arrays(np.float64, shape, elements=elements))
    if spec.spread and draw(st.booleans()):  # (nearly) constant: a tiny variance on purpose
        a = _nearly_constant(spec, draw(st.sampled_from(spec.spread)), draw(elements),
                             np.random.default_rng(draw(st.integers(0, 2**32 - 1))), shape)
    if spec.like is not None and spec.like in arrays and draw(st.booleans()):
        mask = draw(hnp.arrays(np.bool_, shape))
        a = np.where(mask, arrays[spec.like].astype(np.float64), a)
    return _sum_to_one(draw, spec, a)


def _sum_to_one(draw, spec: Real, a: np.ndarray) -> np.ndarray:
    """Now and then, ``a`` divided by its sums along ``spec.sum_to_one`` (where they are not 0)."""
    if spec.sum_to_one is None or not draw(st.booleans()):
        return a
    total = a.sum(axis=spec.sum_to_one, keepdims=True)
    return np.where(total > 0, a / np.where(total > 0, total, 1.0), a)


def _nearly_constant(spec: Real, spread: float, center: float, rng, shape) -> np.ndarray:
    """``center + spread (hi - lo) / 2 * u``, ``u`` uniform in [-1, 1], kept in [lo, hi]."""
    offsets = spread * (spec.hi - spec.lo) / 2 * rng.uniform(-1.0, 1.0, size=shape)
    return np.clip(center + offsets, spec.lo, spec.hi)


def _mask(draw, spec: Mask, shape, attrs, *, edges: bool) -> np.ndarray:
    """0/1 keep-mask: all kept when the rate is 0; else each element kept with
    probability 1 - rate, plus all-kept and all-dropped masks on purpose."""
    rate = _rate(spec, attrs)
    if rate == 0:
        return np.ones(shape)
    pick = "random"
    if edges:
        pick = draw(st.sampled_from(["random", "random", "kept", "dropped"] + ["lines"] * spec.lines))
        if pick in ("kept", "dropped"):
            return np.full(shape, 1.0 if pick == "kept" else 0.0)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    mask = (rng.random(shape) >= rate).astype(np.float64)
    if pick == "lines":  # whole lines along the last axis dropped, at least one
        lines = np.asarray(rng.random(shape[:-1]) < 0.5)
        lines.flat[rng.integers(lines.size)] = True
        mask[lines] = 0.0
    return mask


def _rate(spec: Mask, attrs: dict) -> float:
    return attrs[spec.rate] if isinstance(spec.rate, str) else spec.rate


def _lengths(draw, steps: int, shape, *, edges: bool) -> np.ndarray:
    """Lengths in [1, steps]; all full and all 1 on purpose, and 1 and full mixed in."""
    if edges:
        pick = draw(st.sampled_from(["random", "random", "full", "one"]))
        if pick != "random":
            return np.full(shape, steps if pick == "full" else 1, dtype=np.int64)
        return draw(hnp.arrays(np.int64, shape, elements=st.one_of(st.sampled_from([1, steps]),
                                                                    st.integers(1, steps))))
    return np.random.default_rng(draw(st.integers(0, 2**32 - 1))).integers(1, steps + 1, size=shape)


@st.composite
def cases(draw, name: str, dtype: str, *, edges: bool = True) -> Case:
    """Draw a valid Case for catalogue layer ``name`` computed in ``dtype``."""
    layer = LAYERS[name]
    dims: dict = {}
    for dim, spec in layer.dims.items():
        dims[dim] = _size(draw, spec, dims)
    d = SimpleNamespace(**dims)
    specs = {a: spec.range(d) if isinstance(spec, Drawn) else spec for a, spec in layer.attrs.items()}
    # A float attribute is rounded to the dtype too: a float32 kernel compares and
    # multiplies with the float32 value (softplus' threshold, a slope).
    attrs = {a: _round_attr(draw(attribute(spec, edges=edges)), spec, dtype) for a, spec in specs.items()}
    arrays: dict = {}
    for arr_name, spec in layer.arrays.items():
        if not _present(spec, attrs) or spec.when is None and spec.optional and not draw(st.booleans()):
            continue
        shape = spec.shape(d, attrs)
        if isinstance(spec.values, Labels):
            k = getattr(d, spec.values.classes)
            arrays[arr_name] = draw(hnp.arrays(np.int64, shape, elements=st.integers(0, k - 1)))
        elif isinstance(spec.values, Lengths):
            arrays[arr_name] = _lengths(draw, getattr(d, spec.values.steps), shape, edges=edges)
        elif isinstance(spec.values, Mask):
            arrays[arr_name] = _round(_mask(draw, spec.values, shape, attrs, edges=edges), dtype)
        else:
            arrays[arr_name] = _round(_real(draw, spec.values, shape, arrays, edges=edges), dtype)
    if edges:
        arrays = _special(draw, layer, arrays, dtype)
    return _with_cotangent(name, dtype, attrs, arrays, np.random.default_rng(draw(st.integers(0, 2**32 - 1))))


SPECIAL = ("nonfinite", "subnormal", "tiny")  # the kinds of special value a case may hold
SPECIAL_ODDS = 5  # one case in SPECIAL_ODDS holds one kind


def _special(draw, layer, arrays: dict, dtype: str) -> dict:
    """Now and then, special values at a few drawn positions of one array: NaN,
    +Inf and -Inf in an input where the layer declares them meaningful
    (``Layer.nonfinite``); subnormals of the case dtype (kept, not flushed as
    ``_round`` does elsewhere) or magnitudes near sqrt(tiny), whose products are
    subnormal (an intermediate result a framework may flush to zero), in those
    inputs or, for every other layer with a gradient, in any differentiable array."""
    names, kinds = list(layer.nonfinite), SPECIAL
    if not names and layer.vjp is not None:  # optimizer trajectories: not yet (README, "Special values")
        names = [n for n, spec in layer.arrays.items() if spec.differentiable]
        kinds = tuple(k for k in SPECIAL if k != "nonfinite")
    names = [n for n in names if n in arrays and arrays[n].size]
    if not names or draw(st.integers(0, SPECIAL_ODDS - 1)):
        return arrays
    kind, name = draw(st.sampled_from(kinds)), draw(st.sampled_from(names))
    a = arrays[name].copy()
    at = np.array(draw(st.lists(st.integers(0, a.size - 1), min_size=1, max_size=min(3, a.size), unique=True)))
    if kind == "nonfinite":
        a.flat[at] = draw(st.lists(st.sampled_from([np.nan, np.inf, -np.inf]), min_size=len(at), max_size=len(at)))
        return {**arrays, name: a}
    if draw(st.booleans()):  # the whole array that small: sums of subnormal products
        at = np.arange(a.size)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    tiny = float(np.finfo(dtype).tiny)
    size = tiny if kind == "subnormal" else np.sqrt(tiny)
    a.flat[at] = (rng.choice([-1.0, 1.0], len(at)) * size * 2.0 ** -rng.uniform(0, 20, len(at))).astype(dtype)
    return {**arrays, name: a}


def _present(spec, attrs) -> bool:
    """False for an array its ``when`` leaves out of a case with these attributes."""
    return spec.when is None or bool(spec.when(attrs))


def _with_cotangent(name, dtype, attrs, arrays, rng) -> Case:
    """Complete a case with one cotangent per output: random and generic, never
    all-ones (ones through softmax give a zero gradient), now and then zero for
    all outputs but one; 1 for a loss, whose own gradient is checked."""
    layer = LAYERS[name]
    as64 = {k: v if v.dtype.kind == "i" else v.astype(np.float64) for k, v in arrays.items()}
    if layer.vjp is None:  # forward-only: nothing to differentiate
        return Case(name, dtype, attrs, arrays, {})
    with ieee():
        outs = _named_outputs(layer, layer.forward(**as64, **attrs)[0])
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
    layer = LAYERS[name]
    d = SimpleNamespace(**dims)
    rng = np.random.default_rng(seed)
    arrays = {}
    for arr_name, spec in layer.arrays.items():
        if not _present(spec, attrs):
            continue
        shape = spec.shape(d, attrs)
        if isinstance(spec.values, Labels):
            arrays[arr_name] = rng.integers(0, getattr(d, spec.values.classes), size=shape)
        elif isinstance(spec.values, Lengths):
            arrays[arr_name] = rng.integers(1, getattr(d, spec.values.steps) + 1, size=shape)
        elif isinstance(spec.values, Mask):
            arrays[arr_name] = _round((rng.random(shape) >= _rate(spec.values, attrs)).astype(np.float64), dtype)
        else:
            arrays[arr_name] = _round(rng.uniform(spec.values.lo, spec.values.hi, size=shape), dtype)
    return _with_cotangent(name, dtype, attrs, arrays, rng)
