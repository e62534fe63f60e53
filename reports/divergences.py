"""The one table of known divergences: where a framework differs from the exact answer, understood and measured.

Each entry says where it holds (the layers, frameworks and dtypes, and a
condition over the case's data from ``conditions.py``) and how far it may go
(the per-element ``outcome`` it explains, a ``bound`` on the error elsewhere, the
error message it ``raises``, or ``UNBOUNDED``, a decision with its reason); what
happens there and what was measured lives in ``divergences.toml`` under the same
stable key, so this file reads as conditions and bounds. A check that fails inside
a known divergence, within what it declares, is reported as ``known_divergence``
with the reason and the measured behaviour: never hidden. Entries are grouped by
layer family.
"""

from __future__ import annotations

import functools
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from . import conditions as c

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

TORCH, TENSORFLOW = ("torch",), ("tensorflow",)
F32, F64 = ("float32",), ("float64",)
COMPILED_TORCH = ("compile", "inductor")
MASKED_DEEP = ("masked_bidirectional_rnn", "masked_bidirectional_lstm", "masked_bidirectional_gru",
               "masked_stacked_rnn", "masked_stacked_lstm", "masked_stacked_gru")
MASKED_RECURRENT = ("masked_rnn", "masked_lstm", "masked_gru", *MASKED_DEEP)
RECURRENT = ("rnn", "lstm", "gru", "stacked_rnn", "stacked_lstm", "stacked_gru", "bidirectional_rnn",
             "bidirectional_lstm", "bidirectional_gru", *MASKED_RECURRENT)
NORMS = ("batch_norm", "batch_norm_inference", "layer_norm", "rms_norm", "group_norm", "instance_norm")
MODELS = ("model_mlp", "model_cnn", "model_resnet", "model_sequence", "model_transformer")
PROSE = Path(__file__).with_name("divergences.toml")


@functools.cache
def prose() -> dict:
    """``{key: {"reason": ..., "measured": ...}}`` from divergences.toml, read once."""
    with PROSE.open("rb") as f:
        return tomllib.load(f)


UNBOUNDED = math.inf  # a bound that is a decision: the divergence may explain any error (why_unbounded says why)


@dataclass(frozen=True)
class Divergence:
    """A difference between a framework and the oracle that is known and explained.

    ``key`` names it in rows, reports and divergences.toml, stably: a report
    merged long after a divergence was added or removed still means the same by
    it. ``when`` maps tuples of layers to the condition (``conditions.py``) that
    says, for a case of one of them, whether the divergence can show; its layers
    are every layer named there. ``frameworks`` and ``dtypes``: None for any. A
    failing or erroring row of a case inside the condition becomes
    ``known_divergence`` only as far as the divergence says it can go, and is
    still shown with its measured error, never hidden:

    ``outcome``: the per-element results it explains, a named function ``(exact,
    got, case, row) -> bool array`` from ``conditions.py`` marking the positions of
    one compared tensor that hold them ("NaN where the exact value is finite");
    where the two shapes differ, it must mark the whole tensor (an empty loss
    where the exact one is a scalar). ``bound``: the largest ``max_rel_err`` it
    explains over every other position, which must otherwise agree as the check
    asks (NaN and Inf where the oracle has them); None: those positions are held
    to the tolerance itself. ``UNBOUNDED`` explains any error, a decision that
    divergences.toml justifies under ``why_unbounded``. ``raises``: a regular
    expression an error row's message must match (a framework that refuses the
    case); an error row is never explained otherwise. Every divergence declares at
    least one of ``bound``, ``outcome`` and ``raises``. ``modes``: the execution
    modes it shows in ("compile", "xla", ...; None for every mode): a compiled
    path's own behaviour says so.
    """

    key: str
    when: dict
    frameworks: tuple | None = None
    dtypes: tuple | None = None
    bound: float | None = None
    outcome: Callable | None = None
    raises: str | None = None
    modes: tuple | None = None
    _conditions: dict = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "_conditions", {layer: cond for layers, cond in self.when.items() for layer in layers})

    @property
    def layers(self) -> tuple:
        return tuple(self._conditions)

    @property
    def reason(self) -> str:
        return prose()[self.key]["reason"]

    @property
    def measured(self) -> str:
        return prose()[self.key]["measured"]

    @property
    def why_unbounded(self) -> str:
        return prose()[self.key].get("why_unbounded", "")

    @property
    def declared(self) -> bool:
        """Whether it says how far it may go (a bound, an outcome or an error message)."""
        return self.bound is not None or self.outcome is not None or self.raises is not None

    @property
    def finite_reach(self) -> float:
        """The largest error, relative to the scale, it may explain at a position finite on both sides: its
        bound; 0 where it declares none (such positions are held to the tolerance); UNBOUNDED where its
        outcome marks finite values by where they are rather than by what they are (a kink's reach)."""
        if self.bound is not None:
            return self.bound
        return UNBOUNDED if getattr(self.outcome, "finite", False) else 0.0

    def limits(self) -> str:
        """How far it may go, in words (the report's ``bound`` column): "NaN where the exact value is
        finite; elsewhere max_rel_err <= 1e-07"."""
        if self.bound == UNBOUNDED:
            return f"any error (unbounded: {self.why_unbounded or 'no reason given'})"
        parts = [describe(self.outcome)] if self.outcome is not None else []
        if self.bound is not None:
            parts.append(("elsewhere " if parts else "") + f"max_rel_err <= {self.bound:g}")
        elif parts:
            parts.append("elsewhere within tolerance")
        if self.raises is not None:
            parts.append(("or " if parts else "") + f"an error matching {self.raises!r} (it refuses the case)")
        return "; ".join(parts) or "nothing declared (explains no row)"

    def explains(self, row: dict, exact=None, got=None, case=None) -> bool:
        """Whether the divergence explains a row that did not pass: an error row by its message (``raises``),
        a failing row position by position when ``exact`` and ``got`` (the arrays the row compared) are given,
        else by the row's own numbers (a row judged again later, under --strict-precision)."""
        if self.bound == UNBOUNDED:
            return row["status"] in ("fail", "error")
        if row["status"] == "error":
            return self.raises is not None and re.search(self.raises, str(row["detail"])) is not None
        if row["status"] != "fail":
            return False
        if exact is None or got is None:
            return self.bound is not None and not _differing(row) and row["max_rel_err"] <= self.bound
        exact, got = np.asarray(exact, dtype=np.float64), np.asarray(got, dtype=np.float64)
        if exact.shape != got.shape:
            return self.outcome is not None and bool(np.all(self.outcome(exact, got, case, row)))
        marked = np.zeros(exact.shape, dtype=bool)
        if self.outcome is not None:
            with np.errstate(all="ignore"):
                marked = np.broadcast_to(np.asarray(self.outcome(exact, got, case, row), dtype=bool), exact.shape)
        rest = ~marked
        finite = np.isfinite(exact) & np.isfinite(got)
        same = (np.isnan(exact) & np.isnan(got)) | (np.isinf(exact) & (exact == got))
        if np.any(rest & ~finite & ~same):
            return False
        err = float(np.abs(got[rest & finite] - exact[rest & finite]).max(initial=0.0))
        allowed = row["atol"] if self.bound is None else max(row["atol"], self.bound * row["scale"])
        return err <= allowed

    def matches(self, case, framework: str, evaluation, mode: str = "eager") -> bool:
        """Whether the case falls inside the divergence for ``framework`` in execution ``mode``;
        ``evaluation`` is the oracle's answer for the case (the conditions read it rather than run
        the layer again)."""
        condition = self._conditions.get(case.layer)
        return (condition is not None and (self.frameworks is None or framework in self.frameworks)
                and (self.modes is None or mode in self.modes)
                and (self.dtypes is None or case.dtype in self.dtypes) and bool(condition(case, evaluation)))


def together(divergences: list[Divergence]) -> Divergence:
    """Several divergences that hold for one case, as one: the positions any of their outcomes
    marks, the largest of their bounds elsewhere (each holds over the whole case), any of their
    error messages. None of them UNBOUNDED (that one explains alone)."""
    outcomes = [d.outcome for d in divergences if d.outcome is not None]
    bounds = [d.bound for d in divergences if d.bound is not None]
    messages = [f"(?:{d.raises})" for d in divergences if d.raises is not None]
    return Divergence(" and ".join(d.key for d in divergences), {}, bound=max(bounds, default=None),
                      outcome=c.either(*outcomes) if outcomes else None, raises="|".join(messages) or None)


def _differing(row: dict) -> int:
    """How many positions of a row held NaN or Inf on one side only (or of another kind)."""
    found = re.search(r"(\d+) position\(s\) differ", str(row.get("nonfinite") or ""))
    return int(found.group(1)) if found else 0


def describe(outcome) -> str:
    """An outcome in words: the first line of its docstring (its name without one)."""
    doc = (getattr(outcome, "__doc__", None) or "").strip()
    return doc.splitlines()[0].rstrip(".") if doc else getattr(outcome, "__name__", repr(outcome))


D = Divergence
U = UNBOUNDED
NAN_FINITE, NAN_INF, NAN_NOT_NAN = c.nan_where_finite, c.nan_where_inf, c.nan_where_not_nan
KNOWN_DIVERGENCES: list[Divergence] = [
    # ---- dense and the residual block
    D("residual-relu-kink-by-rounding", {("residual_block",): c.residual_relu_near_kink}, outcome=c.kink_reach),
    D("tf-flush-to-zero-residual-relu", {("residual_block",): c.subnormal_pre_activation}, TENSORFLOW,
      outcome=c.flushed_unit_reach),
    # ---- activations
    D("torch-gelu-float32-inf", {("gelu",): c.gelu_plus_inf}, TORCH, F32, outcome=NAN_INF),
    D("torch-elu-nan-gradient-vectorized", {("elu", "selu"): c.NAN_X}, TORCH, outcome=NAN_FINITE),
    D("keras-elu-nan-gradient-alpha", {("elu",): c.elu_nan_with_alpha}, TENSORFLOW, outcome=c.alpha_g_at_nan),
    D("tf-softmax-float32-nan-in-place", {("softmax",): c.NONFINITE_X}, TENSORFLOW, F32, outcome=c.finite_where_nan),
    D("tf-elu-exp-minus-one", {("elu",): c.exp_minus_one_loses}, TENSORFLOW, bound=1.01),
    D("tf-gelu-float32-constants", {("gelu",): c.always}, TENSORFLOW, F64, bound=1e-7),
    D("tf-leaky-relu-float32-alpha", {("leaky_relu",): c.slope_rounds_to_float32}, TENSORFLOW, F64, bound=1e-7),
    D("tf-selu-exp-minus-one", {("selu",): c.selu_exp_minus_one}, TENSORFLOW, bound=1.01),
    D("tf-softplus-no-threshold", {("softplus",): c.softplus_threshold_shows}, TENSORFLOW,
      outcome=c.on_the_softplus_curve),
    D("torch-softplus-float32-overflow-below-threshold", {("softplus",): c.softplus_overflows_below_threshold},
      TORCH, F32, outcome=c.nonfinite_where_finite),
    D("tf-flush-to-zero-at-kink", {("relu", "leaky_relu", "elu", "selu", "max_pool2d"): c.subnormal_x,
                                   ("l1",): c.subnormal_l1_difference,
                                   ("binary_cross_entropy_with_logits",): c.subnormal_logits_with_pos_weight},
      TENSORFLOW, outcome=c.at_flushed_inputs),
    # ---- losses
    D("torch-l1-sign-nan-is-zero", {("l1",): c.holds("pred", "target", what=c.np.isnan)}, TORCH,
      outcome=c.zero_where_nan),
    D("keras-huber-where-nan-gradient", {("huber", "smooth_l1"): c.holds("pred", "target")}, TENSORFLOW,
      outcome=NAN_FINITE),
    D("tf-bce-infinite-logit", {("binary_cross_entropy_with_logits",): c.holds("logits", what=c.np.isinf)},
      TENSORFLOW, outcome=NAN_INF),
    D("torch-bce-infinite-logit", {("binary_cross_entropy_with_logits",): c.holds("logits", what=c.np.isinf)},
      TORCH, outcome=NAN_INF),
    D("torch-cross-entropy-ignored-row-nan", {("cross_entropy",): c.ignored_row_nonfinite}, TORCH,
      outcome=NAN_FINITE),
    D("tf-cross-entropy-nonfinite-logits", {("cross_entropy",): c.holds("logits")}, TENSORFLOW, outcome=NAN_NOT_NAN),
    D("tf-softmax-cross-entropy-unnormalized-targets", {("cross_entropy",): c.targets_off_the_simplex}, TENSORFLOW,
      outcome=c.missing_target_mass),
    D("tf-weighted-bce-kink-at-zero", {("binary_cross_entropy_with_logits",): c.pos_weight_at_zero_logit},
      TENSORFLOW, outcome=c.at_zero_logits),
    D("keras-loss-empty-batch", {("mse", "l1", "huber", "binary_cross_entropy_with_logits", "cross_entropy"):
                                 c.empty_reduced_loss}, TENSORFLOW,
      outcome=c.either(c.empty_where_scalar, c.zero_where_nan)),
    # ---- convolution and pooling
    D("tf-conv-nonfinite-spreads", {("conv1d", "conv2d", "conv_transpose2d"): c.NONFINITE_X}, TENSORFLOW,
      outcome=NAN_NOT_NAN),
    D("torch-conv-transpose-weight-grad-reads-padding", {("conv_transpose2d",): c.nonfinite_x_with_cropping}, TORCH,
      outcome=NAN_NOT_NAN),
    D("tf-conv-float32-empty-batch-shape", {("conv1d", "conv2d", "conv_transpose2d"): c.empty_batch_changes_shape},
      TENSORFLOW, F32, outcome=c.empty_in_another_shape, raises=r"Incompatible shapes: \[0,"),
    D("tf-max-pool-skips-nan", {("max_pool2d",): c.NONFINITE_X}, TENSORFLOW,
      outcome=c.either(c.finite_where_nan, c.lowest_where_minus_inf, c.in_a_window_holding_nan)),
    # ---- normalization
    D("tf-batch-norm-inference-folded-scale", {("batch_norm_inference",): c.NONFINITE_X}, TENSORFLOW,
      outcome=NAN_INF),
    D("keras-layer-norm-rms-scaling-uses-variance", {("rms_norm",): c.rms_scaling_route}, TENSORFLOW, bound=U),
    D("torch-batch-norm-one-value", {("batch_norm",): c.one_value_per_channel}, TORCH,
      raises="Expected more than 1 value per channel when training"),
    D("torch-group-norm-one-value", {("group_norm",): c.one_value_per_group}, TORCH,
      raises="Expected more than 1 value per channel when training"),
    D("tf-batch-norm-empty-batch-nan", {("batch_norm",): c.empty_x}, TENSORFLOW, outcome=NAN_FINITE),
    D("torch-instance-norm-one-value", {("instance_norm",): c.one_position}, TORCH,
      raises="Expected more than 1 spatial element when training"),
    D("torch-instance-norm-affine-empty-batch", {("instance_norm",): c.affine_empty_batch_with_positions}, TORCH,
      raises=r"select\(\): index 0 out of range"),
    D("norm-eps-nonpositive-nonfinite-kind", {NORMS: c.variance_plus_eps_by_rounding},
      outcome=c.either(c.nonfinite_where_other, c.finite_where_nan)),
    # ---- recurrent
    D("gradient-overflow-through-time", {RECURRENT: c.gradient_overflows_through_time}, dtypes=F32,
      outcome=c.nonfinite_where_finite),
    D("tf-flush-to-zero-rnn-relu", {("rnn", "masked_rnn"): c.subnormal_rnn_pre_activation}, TENSORFLOW, bound=U),
    D("tf-rnn-relu-kink-summation-order", {("rnn", "masked_rnn"): c.rnn_relu_sign_by_rounding}, TENSORFLOW, bound=U),
    D("torch-rnn-relu-kink-float32-rounding", {("rnn",): c.rnn_relu_sign_by_rounding}, TORCH, F32, bound=U),
    D("tf-masking-layer-dropped-with-initial-state", {MASKED_RECURRENT: c.masking_layer_ignored}, TENSORFLOW,
      bound=U),
    D("keras-lstm-empty-batch", {("lstm", "stacked_lstm", "bidirectional_lstm", "masked_lstm",
                                  "masked_bidirectional_lstm", "masked_stacked_lstm"): c.empty_batch}, TENSORFLOW,
      raises=r"Biases must be 1D: \[0,|Shape must be rank 1 but is rank 2 for .*BiasAdd.* input shapes: \[0,"),
    D("torch-pack-empty-batch", {MASKED_RECURRENT: c.empty_batch}, TORCH, raises="Cannot pack empty tensors"),
    # ---- attention
    D("torch-mha-masked-row-nan", {("multi_head_attention",): c.need_weights_rows_without_keys,
                                   ("multi_head_attention_weights",): c.attention_rows_without_keys}, TORCH,
      outcome=NAN_FINITE),
    D("keras-attention-float32-scale", {("scaled_dot_product_attention",): c.sdpa_scale_rounds,
                                        ("multi_head_attention", "multi_head_attention_weights"): c.mha_scale_rounds},
      TENSORFLOW, F64, bound=5e-7),
    D("keras-ops-add-bias-as-nchw", {("multi_head_attention", "multi_head_attention_weights"):
                                     c.keras_bias_add_as_nchw}, TENSORFLOW, bound=U),
    # ---- training step
    D("keras-optimizer-zero-clipping-clips-nothing", {("clip_by_value",): c.optimizer_route_zero("clip_value"),
                                                      ("clip_by_norm", "clip_by_global_norm"):
                                                      c.optimizer_route_zero("max_norm")}, TENSORFLOW,
      outcome=c.unclipped),
    D("tf-clip-by-norm-nan-threshold", {("clip_by_norm",): c.clip_threshold_nan}, TENSORFLOW, outcome=NAN_FINITE),
    D("tf-clip-by-global-norm-nan-threshold", {("clip_by_global_norm",): c.clip_threshold_nan}, TENSORFLOW,
      outcome=NAN_FINITE),
    D("clip-norm-squares-underflow", {("clip_by_norm",): c.squares_underflow}, outcome=NAN_FINITE, bound=1.0),
    D("clip-global-norm-squares-underflow", {("clip_by_global_norm",): c.squares_underflow}, outcome=NAN_FINITE,
      bound=1.0),
    D("eps-zero-squares-underflow", {("adam_step", "adamw_step", "rmsprop_step", "adagrad_step"):
                                     c.eps_zero_on_underflowing_squares}, outcome=c.nonfinite_where_other),
    D("mlp-relu-kink-by-rounding", {("train_step",): c.mlp_kink_by_rounding}, bound=U),
    D("mlp-adam-normalizes-rounding-noise", {("train_step",): c.mlp_adam_gradient_at_rounding}, bound=U),
    D("tf-flush-to-zero-mlp-relu", {("train_step",): c.mlp_subnormal_pre_activation}, TENSORFLOW, bound=U),
    # ---- whole models
    D("model-kink-decided-by-rounding", {MODELS: c.kink_inside_model}, bound=U),
    # ---- execution modes
    D("torch-compile-optimizer-float32-step", {("adam_step", "adamw_step", "adagrad_step", "train_step"): c.always},
      TORCH, F64, bound=2e-5, modes=COMPILED_TORCH),
    D("torch-compile-mean-loss-empty-batch", {("mse", "huber"): c.empty_mean_loss}, TORCH, modes=COMPILED_TORCH,
      raises="ZeroDivisionError"),
    D("keras-adaptive-pool-graph-window", {("adaptive_avg_pool2d",): c.adaptive_big_window_exceeds}, TENSORFLOW,
      modes=("function", "xla"), raises="Negative dimension size caused by subtracting"),
]

assert len({d.key for d in KNOWN_DIVERGENCES}) == len(KNOWN_DIVERGENCES), "divergence keys must be unique"


def divergence_notes() -> list[dict]:
    """The table as the report records it (a report shows what its run knew)."""
    return [{"key": d.key, "layer": ", ".join(d.layers), "framework": ", ".join(d.frameworks or ("*",)),
             "dtype": ", ".join(d.dtypes or ("*",)), "mode": ", ".join(d.modes or ("*",)),
             "reason": d.reason, "measured": d.measured,
             "bound": d.limits()}
            for d in KNOWN_DIVERGENCES]


def undeclared(divergences: list[Divergence] | None = None) -> list[str]:
    """What is wrong with how far the table's entries say they may go, one line per entry
    (empty when nothing is): an entry declaring none of ``bound``, ``outcome`` and
    ``raises``; an ``UNBOUNDED`` one whose prose lacks ``why_unbounded``; a
    ``why_unbounded`` on an entry that is bounded."""
    found = []
    for d in KNOWN_DIVERGENCES if divergences is None else divergences:
        reason = prose().get(d.key, {}).get("why_unbounded", "").strip()
        if not d.declared:
            found.append(f"{d.key}: declares no bound, outcome or error message (or UNBOUNDED with a reason)")
        elif d.bound == UNBOUNDED and not reason:
            found.append(f"{d.key}: UNBOUNDED without why_unbounded in divergences.toml")
        elif d.bound != UNBOUNDED and reason:
            found.append(f"{d.key}: why_unbounded in divergences.toml, but it is bounded")
    return found


def known_divergences(case, framework: str, evaluation, mode: str = "eager") -> list[Divergence]:
    """Every known divergence whose condition the case meets for ``framework`` in ``mode``, in table order."""
    return [d for d in KNOWN_DIVERGENCES if d.matches(case, framework, evaluation, mode)]
