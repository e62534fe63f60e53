"""The vocabulary of the catalogue: how a layer declares what it takes.

Plain data only (no hypothesis here: ``reference/`` is NumPy-only). The test
strategies in ``tests/strategies.py`` turn these declarations into hypothesis
strategies; validation turns them into clear errors.

A layer declares
  * ``dims``: free sizes (``Int``) or whole shapes (``Shape``), drawn first;
  * ``attrs``: hyperparameters (``Int``, ``Float``, ``Choice``), or ``Drawn``:
    a range that depends on the drawn dims (an axis depends on the rank);
  * ``arrays``: named inputs and parameters, each with a shape computed from the
    dims and attrs, a value domain (``Real`` or ``Labels``), and whether the
    gradient is checked for it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, Callable


def require(ok: bool, field_name: str, message: str) -> None:
    """Raise ``ValueError("field: message")`` unless ``ok``: the one way the oracle rejects input."""
    if not ok:
        raise ValueError(f"{field_name}: {message}")


@dataclass(frozen=True)
class Int:
    """An integer in ``[lo, hi]``; ``like`` names another dim it equals on purpose
    now and then (square weights, equal widths); ``edges`` are sizes worth drawing
    on purpose, outside the range too (a 50-step sequence in a range kept small
    for speed)."""

    lo: int
    hi: int
    like: str | None = None
    edges: tuple = ()


@dataclass(frozen=True)
class Float:
    """A float in ``[lo, hi]``; ``edges`` are values worth drawing on purpose."""

    lo: float
    hi: float
    edges: tuple = ()


NO_DEFAULT = object()


@dataclass(frozen=True, init=False)
class Choice:
    """One of a few values (strings, booleans, special numbers). ``default``: for an
    attribute added after cases were saved, the value an older saved case meant
    (``case.load`` fills it in; validation still requires it of every new case)."""

    values: tuple
    default: Any = NO_DEFAULT

    def __init__(self, *values, default=NO_DEFAULT):
        object.__setattr__(self, "values", tuple(values))
        object.__setattr__(self, "default", default)


@dataclass(frozen=True)
class Drawn:
    """An attribute whose range depends on the drawn dims: ``range(dims)`` returns
    an ``Int``, ``Float`` or ``Choice``. ``type`` is the Python type every value
    has (validation checks it without knowing the dims)."""

    type: type
    range: Callable[[SimpleNamespace], Any]


def attr_type_error(spec, value) -> str | None:
    """Why ``value`` cannot be a value of attribute ``spec`` (None when it can).

    Types only, never ranges: the ranges in the catalogue are what is drawn, and
    the oracle decides what is valid. A bool is not an int here (``stride=True``
    means a mistake, not 1)."""
    if isinstance(spec, Choice):
        if not any(type(value) is type(v) and value == v for v in spec.values):
            return f"expected one of {', '.join(map(repr, spec.values))}, got {value!r}"
        return None
    wanted = {Int: (int,), Float: (float, int)}.get(type(spec)) or (spec.type,)
    if isinstance(value, bool) and bool not in wanted or not isinstance(value, wanted):
        names = " or ".join(t.__name__ for t in wanted)
        return f"expected {'an' if names[0] in 'aeiou' else 'a'} {names}, got {type(value).__name__} {value!r}"
    return None


@dataclass(frozen=True)
class Shape:
    """A whole shape, for layers that work on any rank."""

    min_dims: int = 1
    max_dims: int = 3
    min_side: int = 1  # 0: one case in ten has one side 0 (a zero-size array, on purpose)
    max_side: int = 5


@dataclass(frozen=True)
class Real:
    """Real values in ``[lo, hi]``.

    ``edges``: values the strategy mixes in on purpose (kinks, saturation).
    ``like``: the name of another array of the same shape whose values some
    elements copy exactly (so ``pred == target`` happens on purpose).
    ``ties``: draw from a coarse grid sometimes, so equal values meet in one
    window or reduction.
    ``spread``: relative widths worth drawing on purpose for a (nearly) constant
    array: now and then the whole array is ``c + s (hi - lo) / 2 * u`` for one
    ``c`` in ``[lo, hi]``, ``s`` from ``spread`` and ``u`` in ``[-1, 1]``, so every
    reduction sees a tiny variance (``s = 0``: exactly equal values). The
    values stay within ``[lo, hi]``.
    ``sum_to_one``: an axis along which, now and then, the values are divided by
    their sum (a probability distribution; ``lo`` must be >= 0).
    """

    lo: float = -3.0
    hi: float = 3.0
    edges: tuple = (0.0,)
    like: str | None = None
    ties: bool = False
    spread: tuple = ()
    sum_to_one: int | None = None


@dataclass(frozen=True)
class Mask:
    """A 0/1 keep-mask in the case dtype: each element is dropped (0) with the
    probability ``rate`` (the name of an attribute, or a fixed number), kept (1)
    otherwise; a rate of 0 keeps everything. Never differentiable: it is drawn
    data, like a seed. The strategy mixes in all-kept and all-dropped masks on
    purpose; ``lines``: also masks with some whole lines along the last axis
    dropped (an attention row that may see nothing, a fully padded sequence)."""

    rate: str | float
    lines: bool = False


@dataclass(frozen=True)
class Labels:
    """Integer class labels in ``[0, dims[classes])``. Never differentiable."""

    classes: str


@dataclass(frozen=True)
class Lengths:
    """Integer sequence lengths in ``[1, dims[steps]]``, one per sequence (a batch of
    variable-length sequences padded to ``steps``). Never differentiable. The
    strategy draws all-full and all-length-1 batches on purpose."""

    steps: str


@dataclass(frozen=True)
class Array:
    """One named input or parameter of a layer.

    ``shape(dims, attrs)`` gives its shape from the drawn sizes; an ``optional``
    array (a bias) may be left out of a case, and the layer then runs without it.
    ``when(attrs)``: the array is in a case exactly when this is true (one of
    two kinds of target, chosen by an attribute); None: always (or, if
    optional, now and then). ``grad=False`` marks real data that gets no
    gradient (running statistics, a dropout mask); labels never get one.
    """

    shape: Callable[[SimpleNamespace, dict], tuple]
    values: Real | Labels | Lengths | Mask = field(default_factory=Real)
    param: bool = False
    optional: bool = False
    grad: bool = True
    when: Callable[[dict], bool] | None = None

    @property
    def differentiable(self) -> bool:
        return self.grad and isinstance(self.values, Real)


@dataclass(frozen=True)
class Layer:
    """A catalogue entry: the oracle pair plus the space of cases to draw.

    ``forward(**arrays, **attrs) -> (out, residuals)`` and
    ``vjp(residuals, g) -> {array name: gradient}`` are the oracle (float64).
    ``outputs``: the names of the forward outputs, each with its own cotangent.
    A layer with one output returns it as an array and its vjp receives one
    cotangent; a layer with several returns ``{name: array}`` and its vjp
    receives ``{name: cotangent}``. Default: ``("y",)``, or ``("loss",)`` for a loss.
    ``loss``: the output is a loss; when it is a scalar its cotangent is 1, so the
    gradient is that of the loss itself (an unreduced loss gets a random one).
    ``vjp=None``: a forward-only entry (an optimizer trajectory): the forward
    returns ``{name: array}`` with names of its own choosing (``w@1``, ``w@2``,
    one per step), the case has no cotangents, and no gradient is taken.
    ``conventions``: attributes that are not drawn but chosen by each framework
    (the derivative taken at a kink, the element a tie routes to), with the
    oracle's default; an adapter states the value its framework follows.
    ``condition(residuals, cotangents=..., **arrays, **attrs) -> kappa``: for a
    layer whose rounding error depends on the data, how much one rounding of the
    inputs is amplified in its output and gradients (a normalization of nearly
    equal values far from 0), from the forward pass's residuals, or measured by
    perturbation (``sensitivity.sensitivity``). The comparison allows kappa
    times the usual error, and the report shows kappa.
    ``flow``: for a layer through time, the input (batch first, time on axis 1)
    whose gradient's norm per time step, ||dL/dx_t||, is also compared (kind
    ``flow``): the profile that shows gradients vanishing or exploding.
    ``nonfinite``: the data inputs where NaN, +Inf and -Inf are meaningful values
    (a NaN activation reaching a max-pool window, an infinite logit, a missing
    regression target): validation accepts them there, the strategies draw them
    at chosen positions (and subnormals of the dtype), and the oracle's answer is
    its formula evaluated in IEEE arithmetic, as its docstring states (the
    README's "Special values"). Parameters, labels, masks and cotangents are
    always finite, as are the inputs of layers that declare none.
    ``empty``: the layer takes zero-size arrays (a batch of 0, an empty reduction
    axis) and its oracle answers them (empty outputs, zero gradients, NaN for a
    mean over nothing); validation rejects an empty array for any other layer.
    ``family``: the family the report shows it under ("convolution", ...; set by
    the family module that registers it, "other" for a user's own layer).
    ``edges``: the named corners its cases must reach (``Edge``): the ci profile
    draws one case for each edge a framework can run, and the report counts them.
    ``trace(residuals, cotangents) -> {kind: {name: array}}``: for a whole model,
    what is compared beyond its loss and gradients: each layer's output (kind
    ``out``) and the cotangent arriving there (kind ``cot``), named after the step.
    """

    name: str
    forward: Callable[..., tuple]
    vjp: Callable[[Any, Any], dict] | None
    dims: dict
    arrays: dict
    attrs: dict = field(default_factory=dict)
    loss: bool = False
    conventions: dict = field(default_factory=dict)
    condition: Callable[..., float] | None = None
    outputs: tuple = ()
    flow: str | None = None
    nonfinite: tuple = ()
    empty: bool = False
    family: str = "other"
    edges: tuple = ()
    trace: Callable[[Any, Any], dict] | None = None

    @property
    def output_names(self) -> tuple | None:
        """The forward outputs' names, each with a cotangent (None: a forward-only
        entry names its outputs when it runs)."""
        if self.vjp is None:
            return None
        return self.outputs or (("loss",) if self.loss else ("y",))

    @property
    def summary(self) -> str:
        doc = (self.forward.__doc__ or "").strip()
        return doc.splitlines()[0] if doc else self.name


@dataclass(frozen=True)
class Edge:
    """A named corner of a layer's cases, where gradients go wrong if anywhere: a batch
    of 1, an even kernel, depthwise groups, an exact tie, a NaN.

    ``reached(case) -> bool`` says whether a case is in it (read from the case's
    attributes, shapes and values: the report counts every case that reaches it).
    ``force``: dims and attributes a draw sets to land in it (a value, or a tuple
    to choose among), and ``"special"``: the kind of special value to draw
    (``"nonfinite"``, ``"subnormal"``, ``"tiny"``); whatever ``force`` cannot set
    (an exact tie, a kink) is drawn with edge values made frequent, until
    ``reached`` holds.
    """

    name: str
    reached: Callable[[Any], bool]
    force: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Convention:
    """A choice a runner makes where the math leaves one open (the derivative at a
    kink, where a tie routes), with the evidence: ``values`` maps the layer's
    convention attributes to what this runner does."""

    values: dict
    reason: str
