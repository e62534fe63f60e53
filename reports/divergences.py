"""The one table of known divergences: where a framework differs from the exact answer, understood and measured.

Each entry says where it holds (the layers, frameworks and dtypes, and a
condition over the case's data from ``conditions.py``) and how far it may go
(``bound``, ``positions``); what happens there and what was measured lives in
``divergences.toml`` under the same stable key, so this file reads as
conditions and bounds. A check that fails inside a known divergence, within its
bound, is reported as ``known_divergence`` with the reason and the measured
behaviour: never hidden. Entries are grouped by layer family.
"""

from __future__ import annotations

import functools
import sys
from dataclasses import dataclass, field
from pathlib import Path

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


@dataclass(frozen=True)
class Divergence:
    """A difference between a framework and the oracle that is known and explained.

    ``key`` names it in rows, reports and divergences.toml, stably: a report
    merged long after a divergence was added or removed still means the same by
    it. ``when`` maps tuples of layers to the condition (``conditions.py``) that
    says, for a case of one of them, whether the divergence can show; its layers
    are every layer named there. ``frameworks`` and ``dtypes``: None for any. A
    failing or erroring row of a case inside the condition becomes
    ``known_divergence``: still shown with its measured error, never hidden.
    ``bound``: the largest ``max_rel_err`` the divergence can explain; a larger
    error still fails (None: the divergence can change a result entirely, so the
    condition must be narrow). ``positions``: it explains only where NaN and Inf
    come out (a row whose finite positions all pass, and whose non-finite ones
    differ). ``modes``: the execution modes it shows in ("compile", "xla", ...;
    None for every mode): a compiled path's own behaviour says so.
    """

    key: str
    when: dict
    frameworks: tuple | None = None
    dtypes: tuple | None = None
    bound: float | None = None
    positions: bool = False
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

    def explains(self, row: dict) -> bool:
        if self.positions:
            return row["status"] == "fail" and bool(row.get("nonfinite")) and row["max_abs_err"] <= row["atol"]
        return self.bound is None or row["status"] == "fail" and row["max_rel_err"] <= self.bound

    def matches(self, case, framework: str, evaluation, mode: str = "eager") -> bool:
        """Whether the case falls inside the divergence for ``framework`` in execution ``mode``;
        ``evaluation`` is the oracle's answer for the case (the conditions read it rather than run
        the layer again)."""
        condition = self._conditions.get(case.layer)
        return (condition is not None and (self.frameworks is None or framework in self.frameworks)
                and (self.modes is None or mode in self.modes)
                and (self.dtypes is None or case.dtype in self.dtypes) and bool(condition(case, evaluation)))


D = Divergence
KNOWN_DIVERGENCES: list[Divergence] = [
    # ---- dense and the residual block
    D("residual-relu-kink-by-rounding", {("residual_block",): c.residual_relu_near_kink}),
    D("tf-flush-to-zero-residual-relu", {("residual_block",): c.subnormal_pre_activation}, TENSORFLOW),
    # ---- activations
    D("torch-gelu-float32-inf", {("gelu",): c.gelu_plus_inf}, TORCH, F32, positions=True),
    D("torch-elu-nan-gradient-vectorized", {("elu", "selu"): c.NAN_X}, TORCH, positions=True),
    D("keras-elu-nan-gradient-alpha", {("elu",): c.elu_nan_with_alpha}, TENSORFLOW),
    D("tf-softmax-float32-nan-in-place", {("softmax",): c.NONFINITE_X}, TENSORFLOW, F32, positions=True),
    D("tf-elu-exp-minus-one", {("elu",): c.exp_minus_one_loses}, TENSORFLOW),
    D("tf-gelu-float32-constants", {("gelu",): c.always}, TENSORFLOW, F64, bound=1e-7),
    D("tf-leaky-relu-float32-alpha", {("leaky_relu",): c.slope_rounds_to_float32}, TENSORFLOW, F64, bound=1e-7),
    D("tf-selu-exp-minus-one", {("selu",): c.selu_exp_minus_one}, TENSORFLOW),
    D("tf-softplus-no-threshold", {("softplus",): c.softplus_threshold_shows}, TENSORFLOW),
    D("torch-softplus-float32-overflow-below-threshold", {("softplus",): c.softplus_overflows_below_threshold},
      TORCH, F32, positions=True),
    D("tf-flush-to-zero-at-kink", {("relu", "leaky_relu", "elu", "selu", "max_pool2d"): c.subnormal_x,
                                   ("l1",): c.subnormal_l1_difference,
                                   ("binary_cross_entropy_with_logits",): c.subnormal_logits_with_pos_weight},
      TENSORFLOW),
    # ---- losses
    D("torch-l1-sign-nan-is-zero", {("l1",): c.holds("pred", "target", what=c.np.isnan)}, TORCH, positions=True),
    D("keras-huber-where-nan-gradient", {("huber", "smooth_l1"): c.holds("pred", "target")}, TENSORFLOW,
      positions=True),
    D("tf-bce-infinite-logit", {("binary_cross_entropy_with_logits",): c.holds("logits", what=c.np.isinf)},
      TENSORFLOW, positions=True),
    D("torch-bce-infinite-logit", {("binary_cross_entropy_with_logits",): c.holds("logits", what=c.np.isinf)},
      TORCH, positions=True),
    D("torch-cross-entropy-ignored-row-nan", {("cross_entropy",): c.ignored_row_nonfinite}, TORCH, positions=True),
    D("tf-cross-entropy-nonfinite-logits", {("cross_entropy",): c.holds("logits")}, TENSORFLOW, positions=True),
    D("tf-softmax-cross-entropy-unnormalized-targets", {("cross_entropy",): c.targets_off_the_simplex}, TENSORFLOW),
    D("tf-weighted-bce-kink-at-zero", {("binary_cross_entropy_with_logits",): c.pos_weight_at_zero_logit},
      TENSORFLOW),
    D("keras-loss-empty-batch", {("mse", "l1", "huber", "binary_cross_entropy_with_logits", "cross_entropy"):
                                 c.empty_reduced_loss}, TENSORFLOW),
    # ---- convolution and pooling
    D("tf-conv-nonfinite-spreads", {("conv1d", "conv2d", "conv_transpose2d"): c.NONFINITE_X}, TENSORFLOW,
      positions=True),
    D("torch-conv-transpose-weight-grad-reads-padding", {("conv_transpose2d",): c.nonfinite_x_with_cropping}, TORCH,
      positions=True),
    D("tf-conv-float32-empty-batch-shape", {("conv1d", "conv2d", "conv_transpose2d"): c.empty_batch_changes_shape},
      TENSORFLOW, F32),
    D("tf-max-pool-skips-nan", {("max_pool2d",): c.NONFINITE_X}, TENSORFLOW),
    # ---- normalization
    D("tf-batch-norm-inference-folded-scale", {("batch_norm_inference",): c.NONFINITE_X}, TENSORFLOW,
      positions=True),
    D("keras-layer-norm-rms-scaling-uses-variance", {("rms_norm",): c.rms_scaling_route}, TENSORFLOW),
    D("torch-batch-norm-one-value", {("batch_norm",): c.one_value_per_channel}, TORCH),
    D("torch-group-norm-one-value", {("group_norm",): c.one_value_per_group}, TORCH),
    D("tf-batch-norm-empty-batch-nan", {("batch_norm",): c.empty_x}, TENSORFLOW),
    D("torch-instance-norm-one-value", {("instance_norm",): c.one_position}, TORCH),
    D("torch-instance-norm-affine-empty-batch", {("instance_norm",): c.affine_empty_batch_with_positions}, TORCH),
    D("norm-eps-nonpositive-nonfinite-kind", {NORMS: c.variance_plus_eps_by_rounding}, positions=True),
    # ---- recurrent
    D("gradient-overflow-through-time", {RECURRENT: c.gradient_overflows_through_time}, dtypes=F32),
    D("tf-flush-to-zero-rnn-relu", {("rnn", "masked_rnn"): c.subnormal_rnn_pre_activation}, TENSORFLOW),
    D("tf-rnn-relu-kink-summation-order", {("rnn", "masked_rnn"): c.rnn_relu_sign_by_rounding}, TENSORFLOW),
    D("torch-rnn-relu-kink-float32-rounding", {("rnn",): c.rnn_relu_sign_by_rounding}, TORCH, F32),
    D("tf-masking-layer-dropped-with-initial-state", {MASKED_RECURRENT: c.masking_layer_ignored}, TENSORFLOW),
    D("keras-lstm-empty-batch", {("lstm", "stacked_lstm", "bidirectional_lstm", "masked_lstm",
                                  "masked_bidirectional_lstm", "masked_stacked_lstm"): c.empty_batch}, TENSORFLOW),
    D("torch-pack-empty-batch", {MASKED_RECURRENT: c.empty_batch}, TORCH),
    # ---- attention
    D("torch-mha-masked-row-nan", {("multi_head_attention",): c.need_weights_rows_without_keys,
                                   ("multi_head_attention_weights",): c.attention_rows_without_keys}, TORCH),
    D("keras-attention-float32-scale", {("scaled_dot_product_attention",): c.sdpa_scale_rounds,
                                        ("multi_head_attention", "multi_head_attention_weights"): c.mha_scale_rounds},
      TENSORFLOW, F64, bound=1e-7),
    D("keras-ops-add-bias-as-nchw", {("multi_head_attention", "multi_head_attention_weights"):
                                     c.keras_bias_add_as_nchw}, TENSORFLOW),
    # ---- training step
    D("keras-optimizer-zero-clipping-clips-nothing", {("clip_by_value",): c.optimizer_route_zero("clip_value"),
                                                      ("clip_by_norm", "clip_by_global_norm"):
                                                      c.optimizer_route_zero("max_norm")}, TENSORFLOW),
    D("tf-clip-by-norm-nan-threshold", {("clip_by_norm",): c.clip_threshold_nan}, TENSORFLOW),
    D("tf-clip-by-global-norm-nan-threshold", {("clip_by_global_norm",): c.clip_threshold_nan}, TENSORFLOW),
    D("clip-norm-squares-underflow", {("clip_by_norm",): c.squares_underflow}),
    D("clip-global-norm-squares-underflow", {("clip_by_global_norm",): c.squares_underflow}),
    D("eps-zero-squares-underflow", {("adam_step", "adamw_step", "rmsprop_step", "adagrad_step"):
                                     c.eps_zero_on_underflowing_squares}),
    D("mlp-relu-kink-by-rounding", {("train_step",): c.mlp_kink_by_rounding}),
    D("mlp-adam-normalizes-rounding-noise", {("train_step",): c.mlp_adam_gradient_at_rounding}),
    D("tf-flush-to-zero-mlp-relu", {("train_step",): c.mlp_subnormal_pre_activation}, TENSORFLOW),
    # ---- whole models
    D("model-kink-decided-by-rounding", {MODELS: c.kink_inside_model}),
    # ---- execution modes
    D("torch-compile-optimizer-float32-step", {("adam_step", "adamw_step", "adagrad_step", "train_step"): c.always},
      TORCH, F64, bound=2e-5, modes=COMPILED_TORCH),
    D("torch-compile-mean-loss-empty-batch", {("mse", "huber"): c.empty_mean_loss}, TORCH, modes=COMPILED_TORCH),
    D("keras-adaptive-pool-graph-window", {("adaptive_avg_pool2d",): c.adaptive_big_window_exceeds}, TENSORFLOW,
      modes=("function", "xla")),
]

assert len({d.key for d in KNOWN_DIVERGENCES}) == len(KNOWN_DIVERGENCES), "divergence keys must be unique"


def divergence_notes() -> list[dict]:
    """The table as the report records it (a report shows what its run knew)."""
    return [{"key": d.key, "layer": ", ".join(d.layers), "framework": ", ".join(d.frameworks or ("*",)),
             "dtype": ", ".join(d.dtypes or ("*",)), "mode": ", ".join(d.modes or ("*",)),
             "reason": d.reason, "measured": d.measured,
             "bound": "any error" if d.bound is None else f"max_rel_err <= {d.bound:g}"}
            for d in KNOWN_DIVERGENCES]


def known_divergences(case, framework: str, evaluation, mode: str = "eager") -> list[Divergence]:
    """Every known divergence whose condition the case meets for ``framework`` in ``mode``, in table order."""
    return [d for d in KNOWN_DIVERGENCES if d.matches(case, framework, evaluation, mode)]
