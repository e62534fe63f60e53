"""The row schema: one row per (case, candidate, reference, compared name).

A row names what it compares by ``kind`` and ``name``: kind ``out`` is a
forward output (``y``, ``loss``, ``h_n``...), kind ``grad`` the gradient of an
input or parameter (``x``, ``W``...), kind ``flow`` the norm of the gradient
reaching each time step of a layer through time (``profile`` holds both
sides' values, as JSON); later families add kinds (per-step
states, per-layer quantities). ``framework`` is the candidate runner and
``reference`` what it was compared with (``oracle`` unless two frameworks are
compared with each other). ``max_ulp_err`` is the worst element's error in
ulps of the case dtype at the element's own size (see compare.ulp_errors),
``ulp_where`` where it occurs, ``precision`` the verdict on it, ``ulp_oracle``
what it was measured against and what was left out, ``ulp_lost`` (JSON) the
input ranges where digits were lost. ``special`` names the special values the
case holds (NaN, +-Inf, subnormals, per array), ``nonfinite`` what each side
returned where either returned NaN or Inf, ``flushed`` how many subnormal exact
values came back as 0. ``family`` is the layer's family in the catalogue (the
report groups by it; "other" for a layer of the user's that names none).
``edges`` names the declared edges of the layer (``Layer.edges``) the case reaches.
``example``: "first failing" or "minimal" for the two cases hypothesis reports of a
failure it explored (the cases it tried in between are not rows), "" otherwise.
``first_divergence``: for a row of a whole model that did not pass, where the
framework first parts from the oracle ("5:gelu (forward)", "3:rms_norm (backward)";
see localize.py), "" otherwise. ``norm`` and ``reference_norm``: for a whole
model, the L2 norm of the row's tensor, the framework's and the reference's (the
gradient's health through depth); NaN otherwise. Kind ``cot`` (a model's) is the
cotangent arriving at a step's output. ``mode``: the execution mode the framework ran
in ("eager"; "compile", "inductor" for torch.compile; "function", "xla" for
tf.function); ``framework`` then reads "torch.compile". ``vs_eager_eps``: in a
compiled mode, how far the row's tensor is from the same framework's eager result,
in eps of the scale (a measure, not a verdict).
"""

from __future__ import annotations

STATUSES = ("pass", "fail", "known_divergence", "not_applicable", "error")
COLUMNS = ["family", "layer", "framework", "framework_version", "reference", "dtype", "case", "kind", "name", "shape",
           "max_abs_err", "max_rel_err", "err_eps", "scale", "condition", "atol", "rtol", "status", "detail",
           "convention", "divergence", "tolerance_reason", "attrs", "reproduce", "profile",
           "max_ulp_err", "ulp_where", "precision", "ulp_oracle", "ulp_lost",
           "special", "nonfinite", "flushed", "edges", "example", "first_divergence", "norm", "reference_norm",
           "mode", "vs_eager_eps"]
NUMERIC = ["max_abs_err", "max_rel_err", "err_eps", "scale", "condition", "atol", "rtol", "max_ulp_err", "norm",
           "reference_norm", "vs_eager_eps"]
ROW_KEY = ["layer", "framework", "reference", "dtype", "case", "kind", "name"]
GROUP_KEY = ["layer", "framework", "dtype"]


def step_of(name: str) -> int | None:
    """The step t of a trajectory output ``name@t`` (None for any other name)."""
    base, at, step = name.rpartition("@")
    return int(step) if at and base and step.isdigit() else None
