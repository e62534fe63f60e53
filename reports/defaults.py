"""The framework-defaults table for the report: what each framework's defaults are, and
how far apart two training trajectories drift when a port keeps each framework's
defaults or only its conventions.

Everything here is computed by the float64 oracle under each framework's declared
conventions (the adapters' ``convention(layer)``, plain data: no framework is imported),
so the numbers are the formulas' own differences, not rounding. The checks that
each framework really follows its convention are the suite's rows.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..adapters import ADAPTERS
from ..reference import Case, Oracle

# Each framework's defaults, as a user who writes no argument gets them (torch 2.13,
# keras 3.15.1; read from the constructors' signatures). "item" names the
# catalogue entry, or the setting.
DEFAULTS = [
    {"item": "sgd_step", "setting": "lr", "torch": "1e-3", "keras": "0.01"},
    {"item": "momentum_step", "setting": "momentum / dampening / nesterov", "torch": "0 / 0 / False",
     "keras": "0 / (none) / False"},
    {"item": "adam_step", "setting": "lr, betas", "torch": "1e-3, (0.9, 0.999)", "keras": "1e-3, (0.9, 0.999)"},
    {"item": "adam_step", "setting": "eps", "torch": "1e-8 on sqrt(v_hat)", "keras": "1e-7 on sqrt(v) (epsilon hat)"},
    {"item": "adam_step", "setting": "weight_decay", "torch": "0 (L2 when set)", "keras": "None (decoupled when set)"},
    {"item": "adamw_step", "setting": "weight_decay", "torch": "1e-2", "keras": "4e-3"},
    {"item": "adamw_step", "setting": "eps", "torch": "1e-8", "keras": "1e-7 (epsilon hat)"},
    {"item": "rmsprop_step", "setting": "lr, alpha/rho", "torch": "1e-2, 0.99", "keras": "1e-3, 0.9"},
    {"item": "rmsprop_step", "setting": "eps", "torch": "1e-8 outside sqrt", "keras": "1e-7 inside sqrt"},
    {"item": "adagrad_step", "setting": "lr", "torch": "1e-2", "keras": "1e-3"},
    {"item": "adagrad_step", "setting": "initial accumulator, eps", "torch": "0, 1e-10 outside sqrt",
     "keras": "0.1, 1e-7 inside sqrt"},
    {"item": "clip_by_norm, clip_by_global_norm", "setting": "eps on the norm", "torch": "1e-6 (clip_grad_norm_)",
     "keras": "0 (tf.clip_by_norm / clip_by_global_norm)"},
    {"item": "batch_norm", "setting": "eps, momentum", "torch": "1e-5, 0.1 (new = 0.9 old + 0.1 batch)",
     "keras": "1e-3, 0.99 (new = 0.99 old + 0.01 batch)"},
    {"item": "layer_norm, group_norm", "setting": "eps", "torch": "1e-5", "keras": "1e-3"},
    {"item": "cross_entropy, binary_cross_entropy_with_logits", "setting": "input",
     "torch": "logits", "keras": "probabilities (from_logits=False)"},
    {"item": "float64 training", "setting": "lr, weight decay, betas in beta^t, momentum, initial accumulator",
     "torch": "as given (Python floats)", "keras": "rounded to float32"},
]

# Each framework's default hyperparameters for the catalogue's optimizer entries.
OPTIMIZER_DEFAULTS = {
    "sgd_step": ({"lr": 1e-3, "weight_decay": 0.0}, {"lr": 0.01, "weight_decay": 0.0}),
    "adam_step": ({"lr": 1e-3, "beta_1": 0.9, "beta_2": 0.999, "eps": 1e-8, "weight_decay": 0.0},
                  {"lr": 1e-3, "beta_1": 0.9, "beta_2": 0.999, "eps": 1e-7, "weight_decay": 0.0}),
    "adamw_step": ({"lr": 1e-3, "beta_1": 0.9, "beta_2": 0.999, "eps": 1e-8, "weight_decay": 1e-2},
                   {"lr": 1e-3, "beta_1": 0.9, "beta_2": 0.999, "eps": 1e-7, "weight_decay": 4e-3}),
    "rmsprop_step": ({"lr": 1e-2, "alpha": 0.99, "eps": 1e-8, "momentum": 0.0, "centered": False,
                      "weight_decay": 0.0},
                     {"lr": 1e-3, "alpha": 0.9, "eps": 1e-7, "momentum": 0.0, "centered": False,
                      "weight_decay": 0.0}),
    "adagrad_step": ({"lr": 1e-2, "eps": 1e-10, "initial_accumulator_value": 0.0, "weight_decay": 0.0},
                     {"lr": 1e-3, "eps": 1e-7, "initial_accumulator_value": 0.1, "weight_decay": 0.0}),
}

# Shared hyperparameters for the convention gap: PyTorch's defaults where both can be
# set to them, with a weight decay and a momentum so that those conventions show.
CONVENTION_CASES = {
    "sgd_step": {"lr": 0.01, "weight_decay": 0.01},
    "momentum_step": {"lr": 0.01, "momentum": 0.9, "dampening": 0.0, "nesterov": False, "weight_decay": 0.01},
    "adam_step": {"lr": 1e-3, "beta_1": 0.9, "beta_2": 0.999, "eps": 1e-8, "weight_decay": 0.01},
    "adamw_step": {"lr": 1e-3, "beta_1": 0.9, "beta_2": 0.999, "eps": 1e-8, "weight_decay": 0.01},
    "rmsprop_step": {"lr": 1e-2, "alpha": 0.99, "eps": 1e-8, "momentum": 0.9, "centered": False,
                     "weight_decay": 0.01},
    "adagrad_step": {"lr": 1e-2, "eps": 1e-10, "initial_accumulator_value": 0.1, "weight_decay": 0.01},
}


def _gradients(k: int, seed: int, scale: float):
    rng = np.random.default_rng(seed)
    return rng.uniform(-1.0, 1.0, 8), scale * rng.standard_normal((k, 8))


def _drift(layer, attrs_a, conv_a, attrs_b, conv_b, k, seed, scale) -> list[dict]:
    """Per step t: max |w_a - w_b| / max|w_a| of two float64 trajectories on the same gradients."""
    w0, grads = _gradients(k, seed, scale)
    case = Case(layer, "float64", attrs_a, {"w0": w0, "grads": grads}, {})
    a = Oracle(conv_a).run(case)["out"]
    b = Oracle(conv_b).run(case.replace(attrs=attrs_b))["out"]
    return [{"layer": layer, "step": t, "gradient scale": scale,
             "max_rel_diff": float(np.abs(a[f"w@{t}"] - b[f"w@{t}"]).max() / np.abs(a[f"w@{t}"]).max())}
            for t in range(1, k + 1)]


def _conventions(framework: str, layer: str) -> dict:
    c = ADAPTERS[framework].convention(layer)
    return dict(c.values) if c else {}


def convention_gaps(k: int = 10, seed: int = 0, scales=(1.0, 1e-6)) -> pd.DataFrame:
    """The same hyperparameters under PyTorch's conventions, and with one of them (or
    all: "all") switched to Keras': how far the parameters part, per step, for
    gradients of each scale (1e-6: below Adam's eps hat, where the placement of
    epsilon matters most)."""
    rows = []
    for layer, attrs in CONVENTION_CASES.items():
        torch_c, tf_c = _conventions("torch", layer), _conventions("tensorflow", layer)
        differing = [n for n in sorted(set(torch_c) | set(tf_c)) if torch_c.get(n) != tf_c.get(n)]
        for name in [*differing, "all"]:
            other = tf_c if name == "all" else {**torch_c, name: tf_c[name]}
            label = {"convention": name, "torch": "" if name == "all" else repr(torch_c[name]),
                     "keras": "" if name == "all" else repr(tf_c[name])}
            for s in scales:
                rows += [{**r, **label} for r in _drift(layer, attrs, torch_c, attrs, other, k, seed, s)]
    return pd.DataFrame(rows)


def default_gaps(k: int = 10, seed: int = 0, scale: float = 1.0) -> pd.DataFrame:
    """Each framework's defaults and conventions (what a port that sets nothing gets):
    how far the parameters part, per step."""
    rows = []
    for layer, (torch_a, keras_a) in OPTIMIZER_DEFAULTS.items():
        rows += _drift(layer, torch_a, _conventions("torch", layer), keras_a,
                       _conventions("tensorflow", layer), k, seed, scale)
    return pd.DataFrame(rows)


def summary(k: int = 10) -> pd.DataFrame:
    """One row per optimizer and convention: the gap after step 1 and after step k, for
    gradients of scale 1 and 1e-6 (same hyperparameters; "all": every convention
    switched, what PyTorch and Keras compute), then "defaults" (each framework's
    defaults and conventions, gradients of scale 1)."""
    conv, dflt = convention_gaps(k), default_gaps(k)
    rows = []
    for (layer, name), c in conv.groupby(["layer", "convention"], sort=False):
        row = {"layer": layer, "convention": name, "torch": c["torch"].iloc[0], "keras": c["keras"].iloc[0]}
        for s in (1.0, 1e-6):
            cs = c[c["gradient scale"] == s].set_index("step")["max_rel_diff"]
            row[f"|g|~{s:g}: step 1"], row[f"|g|~{s:g}: step {k}"] = cs[1], cs[k]
        rows.append(row)
    for layer, d in dflt.groupby("layer", sort=False):
        d = d.set_index("step")["max_rel_diff"]
        rows.append({"layer": layer, "convention": "defaults", "torch": "", "keras": "",
                     "|g|~1: step 1": d[1], f"|g|~1: step {k}": d[k]})
    return pd.DataFrame(rows)
