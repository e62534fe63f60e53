"""A user's ported model: their PyTorch module against their Keras model, layer by layer.

``compare_models(torch_module, keras_model, inputs, ...)`` pairs the two models' layers in call
order by kind (nn.Linear with keras.layers.Dense, nn.Conv2d with Conv2D, an activation module
with the activation a Dense fuses, ...), loads the Keras model with the PyTorch weights through
the adapters' layouts (``weights="transfer"``) or checks the weights the user transferred
(``"as_is"``: a layer whose weights differ, or match only up to a transpose or another order, is
named), runs both in training and in inference mode on the same batch, one forward and one
backward each, and compares every paired layer: its output, the gradient arriving at it, its
parameters' gradients, and the input's gradient. There is no oracle here: PyTorch is the
reference, Keras the candidate, and a row's tolerance is the dtype's default grown with the
number of layers its value went through (each adds its own rounding).

Where rows do not pass, every paired Keras layer is run again by itself on PyTorch's own values
(its input, the gradient arriving at its output): the first layer whose result differs, forward,
else backward, is ``first_divergence``, and the settings of that pair whose defaults differ
(``layers.explain``: epsilons, momentum, gelu's approximation, padding, fused activations, the
flatten order, ...) say why, where they can. ``steps`` > 0 also trains both for that many steps
with the same optimizer and names the step where the parameters part.

``gradparity pair MODULE:FACTORY`` runs it from the command line: ``FACTORY()`` returns a ``Pair``.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ...reports.tolerances import DEFAULT
from .layers import explain, keras_weights, unmatched
from .run import (PairError, fold_activations, flatten_before, keras_inputs_for, keras_layout, keras_local,
                  keras_run, keras_units, layouts_agree, pair_units, torch_run, transfer)

LOSSES = ("cross_entropy", "mse", "sum")
MODES = ("eval", "train")  # inference first: a training-mode pass moves the running statistics


@dataclass
class Pair:
    """What ``gradparity pair MODULE:FACTORY`` compares: the two models, the batch (NumPy, in
    PyTorch's layout; ``keras_inputs`` the same data in the Keras model's layout when it cannot
    be told from the shapes), the target and the loss (a catalogue loss name: "cross_entropy" on
    logits and class indices, "mse"; "sum" takes a fixed random cotangent of the output; or a pair
    of callables ``(torch_loss(output, target), keras_loss(output, target))``), and ``pairing``
    ({torch module name: keras layer name}) where the order and kinds cannot tell."""

    torch: object
    keras: object
    inputs: object
    target: object = None
    loss: object = "cross_entropy"
    keras_inputs: object = None
    pairing: dict | None = None


@dataclass
class PairResult:
    """The rows (a DataFrame in the report's schema), each mode's first divergent layer and what
    explains it, the layers left unpaired, what was done to the inputs, and the verdict."""

    rows: pd.DataFrame
    first_divergence: dict
    explanations: dict
    unpaired: list
    notes: list = field(default_factory=list)
    trajectory: list = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool((self.rows["status"] == "pass").all()) and not self.unpaired

    def summary(self) -> str:
        lines = [f"{'pass' if self.passed else 'FAIL'}: {len(self.rows)} checks, "
                 f"{int((self.rows['status'] != 'pass').sum())} did not pass"]
        lines += [f"  unpaired: {u}" for u in self.unpaired]
        for mode, where in self.first_divergence.items():
            if where:
                lines.append(f"  {mode}: first divergence at {where}")
                lines += [f"    explained by: {why}" for why in self.explanations.get(mode, [])]
        lines += [f"  {n}" for n in self.notes]
        return "\n".join(lines)


def _as_list(inputs) -> list:
    if isinstance(inputs, (list, tuple)):
        return [np.asarray(a) for a in inputs]
    return [np.asarray(inputs)]


def _losses(loss, target, out_shape_dtype):
    """(torch loss of the output, keras loss of the output) for ``loss``."""
    import keras
    import tensorflow as tf
    import torch

    if isinstance(loss, (tuple, list)) and len(loss) == 2 and all(callable(f) for f in loss):
        return (lambda y: loss[0](y, torch.as_tensor(target)), lambda y: loss[1](y, tf.constant(target)))
    if loss == "cross_entropy":
        if target is None or np.asarray(target).dtype.kind not in "iu":
            raise PairError("loss 'cross_entropy' needs target: class indices (an integer array)")
        t = np.asarray(target)
        ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        return (lambda y: torch.nn.functional.cross_entropy(torch.flatten(y, 1) if y.ndim > 2 else y,
                                                            torch.as_tensor(t, dtype=torch.long)),
                lambda y: ce(tf.constant(t), y))
    if loss == "mse":
        if target is None:
            raise PairError("loss 'mse' needs target, in the layout of the PyTorch model's output")
        t = np.asarray(target)
        return (lambda y: torch.nn.functional.mse_loss(y, torch.as_tensor(t, dtype=y.dtype)),
                lambda y: tf.reduce_mean(tf.square(y - tf.constant(_keras_like(t, y), dtype=y.dtype))))
    if loss == "sum":
        shape, dtype = out_shape_dtype
        g = np.random.default_rng(0).standard_normal(shape).astype(dtype)
        return (lambda y: (y * torch.as_tensor(g)).sum(),
                lambda y: tf.reduce_sum(y * tf.constant(_keras_like(g, y), dtype=y.dtype)))
    raise PairError(f"loss must be one of {', '.join(LOSSES)} or a pair of callables, got {loss!r}")


def _keras_like(a, y):
    moved = np.moveaxis(a, 1, -1) if a.ndim >= 3 and tuple(np.moveaxis(a, 1, -1).shape) == tuple(y.shape) else a
    return np.ascontiguousarray(moved)


def _check_types(torch_module, keras_model):
    import keras
    import torch

    if not isinstance(torch_module, torch.nn.Module):
        raise PairError(f"the PyTorch side must be a torch.nn.Module, got {type(torch_module).__name__}")
    if not isinstance(keras_model, keras.Model):
        raise PairError(f"the Keras side must be a keras.Model (functional or Sequential), got "
                        f"{type(keras_model).__name__}")
    try:
        keras_model.inputs  # noqa: B018 - a subclassed model that was never called has none
    except (AttributeError, ValueError) as e:
        raise PairError(f"the Keras model has no symbolic inputs ({e}): build it functionally or as a "
                        "keras.Sequential with an Input") from None
    if not keras_model.inputs:
        raise PairError("the Keras model has no symbolic inputs: build it functionally or as a keras.Sequential "
                        "with an Input")


def _digest(inputs) -> str:
    h = hashlib.sha1()
    for a in inputs:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:12]


def _row(**fields) -> dict:
    from ...reports.rows import COLUMNS

    return {**dict.fromkeys(COLUMNS, ""), **fields}


def _compare(expected, actual, rtol: float, floor: float) -> dict:
    expected, actual = np.asarray(expected, np.float64), np.asarray(actual, np.float64)
    if expected.shape != actual.shape:
        return {"status": "fail", "detail": f"shape {actual.shape}, expected {expected.shape}",
                "max_abs_err": np.nan, "max_rel_err": np.nan, "atol": np.nan, "scale": np.nan}
    finite = np.isfinite(expected) & np.isfinite(actual)
    mismatch = ~finite & ~((np.isnan(expected) & np.isnan(actual)) | (expected == actual))
    diff = np.abs(expected - actual)[finite]
    err = float(diff.max(initial=0.0))
    scale = max(float(np.abs(expected[finite]).max(initial=0.0)), floor, 1e-30)
    ok = err <= rtol * scale and not mismatch.any()
    detail = ""
    if not ok:
        where = np.unravel_index(int(np.argmax(np.where(finite, np.abs(expected - actual), -1))), expected.shape)
        detail = (f"{int(mismatch.sum())} position(s) NaN/Inf in one only" if mismatch.any() else
                  f"worst at {tuple(int(i) for i in where)}: keras {actual[where]:.9g}, torch {expected[where]:.9g}")
    return {"status": "pass" if ok else "fail", "detail": detail, "max_abs_err": err, "max_rel_err": err / scale,
            "atol": rtol * scale, "scale": scale, "norm": float(np.sqrt(np.sum(actual[finite] ** 2))),
            "reference_norm": float(np.sqrt(np.sum(expected[finite] ** 2)))}


def _local(pairs, train: bool, rtol: float) -> list[tuple[str, int, list]]:
    """Every pair's Keras layer run alone on PyTorch's values: [(direction, index, what differs)]."""
    found = []
    for i, (t, k) in enumerate(pairs):
        if t.x is None or t.y is None or t.cot is None or k.x is None:
            continue  # k.x None: a Keras layer of several inputs, judged by its rows alone
        order = flatten_before(pairs, i)  # a dense layer after a Flatten reads Keras' (H, W, C) order
        x = keras_layout(t, k, t.x, k.x, order)
        cot = keras_layout(t, k, t.cot, k.y)
        if x is None or cot is None:
            continue
        y, gx, grads = keras_local(k.obj, x, cot, train)
        k_local = dataclasses.replace(k, x=x, y=y, cot=cot)
        mine = layouts_agree(t, k_local, "y")
        what = []
        if mine is None or _differs(t.y, mine, rtol, t.x):
            what.append("output")
        if what:
            found.append(("forward", i, what))
            continue
        mapped = keras_weights(t.kind.split("+")[0], t.obj, grads=True, flatten=flatten_before(pairs, i)) or []
        back = [n for n, (a, b) in enumerate(zip(mapped, grads)) if a is not None and _differs(a, b, rtol, cot)]
        gx_t = to_torch(t, k, gx[..., order] if order is not None and gx is not None else gx)
        if t.gx is not None and t.x.dtype.kind == "f" and (gx_t is None or _differs(t.gx, gx_t, rtol, t.cot)):
            back.append("input")
        if back:
            found.append(("backward", i, back))
    forward = [f for f in found if f[0] == "forward"]
    backward = sorted((f for f in found if f[0] == "backward"), key=lambda f: -f[1])
    return forward + backward


def _from_rows(failing) -> list:
    """[(direction, pair index, what)] from the failing rows' names ("3:lstm", "3:lstm.kernel"): the
    first output that differs, else the last layer whose gradients do."""
    def index(r):
        head = r["name"].split(":")[0]
        return int(head) - 1 if head.isdigit() else None

    outs = sorted(i for r in failing if r["kind"] == "out" and (i := index(r)) is not None)
    if outs:
        return [("forward", outs[0], ["output"])]
    back = sorted((i for r in failing if r["kind"] in ("cot", "grad") and (i := index(r)) is not None), reverse=True)
    return [("backward", back[0], ["gradients"])] if back else []


def _flatten_forgotten(pairs, i) -> bool:
    """Whether the dense layer of pair i follows a channels-last Flatten and holds PyTorch's rows unpermuted."""
    if flatten_before(pairs, i) is None:
        return False
    t, k = pairs[i]
    kernel, weight = k.obj.get_weights()[0], t.obj.weight.detach().numpy().T
    return kernel.shape == weight.shape and bool(np.allclose(kernel, weight, rtol=1e-6, atol=1e-7))


def _keras_masked(model, layer) -> bool:
    """Whether a mask reaches ``layer``: a Masking layer or an Embedding(mask_zero=True) before it."""
    for other in model.layers:
        if other is layer:
            return False
        if type(other).__name__ == "Masking" or (type(other).__name__ == "Embedding"
                                                 and other.get_config().get("mask_zero")):
            return True
    return False


def to_torch(t, k, gx):
    """The gradient a Keras layer sent to its input, in PyTorch's layout (its input's layout is its
    output's, except a Flatten's)."""
    from .layers import channels_last, to_torch_layout

    cl = channels_last(k.obj) if k.kind == "flatten" else k.channels_last
    return to_torch_layout(gx, t.x.shape, cl) if gx is not None else None


def _differs(mine, theirs, rtol, given) -> bool:
    mine, theirs = np.asarray(mine, np.float64), np.asarray(theirs, np.float64)
    if mine.shape != theirs.shape:
        return True
    finite = np.isfinite(mine) & np.isfinite(theirs)
    if np.any(~finite & ~((np.isnan(mine) & np.isnan(theirs)) | (mine == theirs))):
        return True
    scale = max(float(np.abs(mine[finite]).max(initial=0.0)), float(np.abs(theirs[finite]).max(initial=0.0)),
                float(np.abs(np.asarray(given, np.float64)).max(initial=0.0)) if given is not None else 0.0)
    return bool(np.any(np.abs(mine[finite] - theirs[finite]) > rtol * scale))


def compare_models(torch_module, keras_model, inputs, *, target=None, loss="cross_entropy", weights="transfer",
                   keras_inputs=None, pairing=None, modes=MODES, steps: int = 0, optimizer: str = "sgd",
                   lr: float = 0.01, rtol: float | None = None, report_dir=None, name: str | None = None) -> PairResult:
    """Compare a PyTorch module with its Keras port (see the module docstring); the result's rows
    are also written as a report into ``report_dir`` when given."""
    if weights not in ("transfer", "as_is"):
        raise PairError(f"weights must be 'transfer' or 'as_is', got {weights!r}")
    bad_modes = [m for m in modes if m not in MODES]
    if bad_modes or not modes:
        raise PairError(f"modes must be some of {', '.join(MODES)}, got {list(modes)!r}")
    _check_types(torch_module, keras_model)
    t_inputs = _as_list(inputs)
    k_inputs, moved = (keras_inputs_for(keras_model, t_inputs) if keras_inputs is None
                       else (_as_list(keras_inputs), ""))
    dtype = str(next((p.detach().numpy().dtype for p in torch_module.parameters()), np.dtype("float32")))
    run = _Run(name or type(torch_module).__name__, dtype, _digest(t_inputs),
               rtol if rtol is not None else DEFAULT.get(dtype, DEFAULT["float32"]).rtol)
    notes = [moved] if moved else []

    # a first pass in inference mode pairs the layers and (transfer) loads the weights
    import torch

    with torch.no_grad():
        out = torch_module.eval()(*[torch.as_tensor(a) for a in t_inputs])
    out = out[0] if isinstance(out, tuple) else out
    t_loss, k_loss = _losses(loss, target, (tuple(out.shape), str(out.detach().numpy().dtype)))
    t_units, _, _, _ = torch_run(torch_module, t_inputs, t_loss, train=False)
    k_units = keras_units(keras_model)
    pairs, unpaired = pair_units(fold_activations(t_units, k_units), k_units, pairing)
    if weights == "transfer":
        transfer(pairs)
    else:
        run.weight_rows(pairs)

    first, explanations = {}, {}
    for mode in modes:
        t_units, t_out, t_value, t_gx = torch_run(torch_module, t_inputs, t_loss, mode == "train")
        pairs, _ = pair_units(fold_activations(t_units, k_units), k_units, pairing)
        k_out, k_value, k_gx = keras_run(keras_model, [k for _, k in pairs], k_inputs, k_loss, mode == "train")
        run.mode_rows(mode, pairs, (t_value, k_value), zip(t_gx, k_gx), t_inputs, k_inputs)
        first[mode], explanations[mode] = run.first_divergence(mode, pairs, keras_model)
    explanations = {m: e for m, e in explanations.items() if e}

    trajectory = _train(torch_module, keras_model, pairs, t_inputs, k_inputs, t_loss, k_loss, steps, optimizer,
                        lr, run.rtol) if steps else []
    result = PairResult(pd.DataFrame(run.rows), first, explanations, unpaired, notes, trajectory)
    if report_dir is not None:
        from ...reports.render import write_report

        result.written = write_report(result.rows, report_dir,
                                      notes={"pair": {"name": run.name, "unpaired": unpaired, "notes": notes,
                                                      "first_divergence": first, "explanations": explanations}})
    return result


@dataclass
class _Run:
    """One comparison's rows as they are made: the pair's ``name``, its ``dtype``, the inputs'
    digest (``case``) and the base relative tolerance."""

    name: str
    dtype: str
    case: str
    rtol: float
    rows: list = field(default_factory=list)

    def _row(self, **fields) -> dict:
        return _row(family="ported model", layer=f"pair:{self.name}", framework="tensorflow", reference="torch",
                    dtype=self.dtype, **fields)

    def weight_rows(self, pairs):
        """weights="as_is": a row per Keras weight, failing where it is not PyTorch's (mapped)."""
        for i, (t, k) in enumerate(pairs):
            mapped = keras_weights(t.kind.split("+")[0], t.obj, flatten=flatten_before(pairs, i))
            for j, (mine, theirs) in enumerate(zip(mapped or [], k.obj.get_weights())):
                how = unmatched(mine, theirs)
                self.rows.append(self._row(
                    case=self.case, kind="weight", name=f"{i + 1}:{t.kind}.{k.obj.weights[j].name}",
                    shape=str(np.shape(theirs)), status="pass" if not how else "fail",
                    detail=f"keras {k.name} weight {j} {how} (torch {t.name})" if how else "",
                    attrs="weights=as_is", tolerance_reason="the same numbers (1e-6)"))

    def _add(self, mode, kind, what, expected, actual, grown, floor, detail=""):
        tol = self.rtol * max(1, grown)
        r = _compare(expected, actual, tol, floor) if actual is not None else {
            "status": "fail", "detail": "no layout of the Keras value matches PyTorch's shape"}
        if r["status"] != "pass" and detail:
            r["detail"] = detail + r["detail"]
        self.rows.append(self._row(case=f"{mode}-{self.case}", kind=kind, name=what, rtol=tol,
                                   tolerance_reason=f"{self.dtype} default rtol x {max(1, grown)}: the rounding of "
                                                    "each layer the value went through adds up",
                                   attrs=f"mode={mode}", shape=str(np.shape(expected)), **r))

    def mode_rows(self, mode, pairs, losses, input_grads, t_inputs, k_inputs):
        """The rows of one mode: the loss, every paired layer's output, incoming gradient and
        parameter gradients, and the inputs' gradients, each with a tolerance grown with the
        layers the value went through."""
        depth = len(pairs)
        t_value, k_value = losses
        self._add(mode, "out", "loss", np.float64(t_value), np.float64(k_value), depth, abs(t_value))
        for i, (t, k) in enumerate(pairs, 1):
            label = f"{i}:{t.kind}"
            self._add(mode, "out", label, t.y, layouts_agree(t, k, "y"), i, _max(t.x),
                      f"[torch {t.name} / keras {k.name}] ")
            self._add(mode, "cot", label, t.cot, layouts_agree(t, k, "cot"), depth - i + 1, 1.0)
            mapped = keras_weights(t.kind.split("+")[0], t.obj, grads=True, flatten=flatten_before(pairs, i - 1))
            for j, (g_t, g_k) in enumerate(zip(mapped or [], k.grads)):
                self._add(mode, "grad", f"{label}.{k.obj.trainable_weights[j].name}", g_t, g_k, depth - i + 1,
                          _max(t.cot))
        for j, (g_t, g_k) in enumerate(input_grads):
            if g_t is not None and g_k is not None:
                moved = k_inputs[j].shape != t_inputs[j].shape
                self._add(mode, "grad", f"inputs[{j}]", g_t, _to_torch_input(g_k, g_t.shape, moved), depth, 1.0)

    def first_divergence(self, mode, pairs, keras_model) -> tuple[str, list]:
        """(first divergence, the settings that explain it) of one mode, both also put on its
        failing rows; ("", []) where every row passed."""
        failing = [r for r in self.rows if r["case"] == f"{mode}-{self.case}" and r["status"] != "pass"]
        if not failing:
            return "", []
        found = _local(pairs, mode == "train", self.rtol)
        how = "run alone on PyTorch's values"
        if not found:  # no layer could be run alone where it differs: the rows' own order says where
            found, how = _from_rows(failing), "from the rows: not run alone"
        if not found:
            first, why = "not localized (every paired layer agrees on PyTorch's own values)", []
        else:
            direction, i, what = found[0]
            t, k = pairs[i]
            first = (f"{i + 1}:{t.kind} ({direction}: {', '.join(map(str, what))}; {how}; "
                     f"torch {t.name} / keras {k.name})")
            why = explain(t.kind, t.obj, k.obj, t.x.shape if t.x is not None else None,
                          after_flatten=_flatten_forgotten(pairs, i),
                          masked=t.packed and not _keras_masked(keras_model, k.obj))
            why = why or ["nothing in the defaults table explains it: see the rows' errors"]
        for r in failing:
            r["first_divergence"] = first
            if why:
                r["detail"] = f"[{'; '.join(why)}] {r['detail']}"
        return first, why


def _max(a) -> float:
    return float(np.abs(np.asarray(a, np.float64)).max(initial=0.0)) if a is not None and np.size(a) else 0.0


def _to_torch_input(g, shape, moved: bool):
    from .layers import to_torch_layout

    return to_torch_layout(g, shape, moved)


def _train(torch_module, keras_model, pairs, t_inputs, k_inputs, t_loss, k_loss, steps, optimizer, lr, rtol):
    """Train both ``steps`` steps with the same optimizer (``sgd`` or ``adam``, learning rate ``lr``)
    from the same weights; per step the largest parameter difference relative to the larger of
    how far that parameter has moved since the start and its size, and whether it is within
    rtol x layers x step (each step's gradients agree to the rows' tolerance, grown with depth;
    their differences add up). Running statistics are left out: PyTorch updates its running
    variance with the unbiased batch variance, Keras with the biased one."""
    import keras
    import tensorflow as tf
    import torch

    if optimizer not in ("sgd", "adam"):
        raise PairError(f"optimizer must be 'sgd' or 'adam', got {optimizer!r}")
    t_opt = (torch.optim.SGD if optimizer == "sgd" else torch.optim.Adam)(torch_module.parameters(), lr=lr)
    k_opt = keras.optimizers.SGD(learning_rate=lr) if optimizer == "sgd" else keras.optimizers.Adam(
        learning_rate=lr, beta_1=0.9, beta_2=0.999, epsilon=1e-8)
    torch_module.train()
    out = []
    xs = [tf.constant(a) for a in k_inputs]
    start = [[np.array(w) for w in (keras_weights(t.kind.split("+")[0], t.obj, flatten=flatten_before(pairs, i))
                                    or [])] for i, (t, _) in enumerate(pairs)]
    for step in range(1, steps + 1):
        t_opt.zero_grad()
        t_loss(torch_module(*[torch.as_tensor(a) for a in t_inputs])).backward()
        t_opt.step()
        with tf.GradientTape() as tape:
            value = k_loss(keras_model(xs if len(xs) > 1 else xs[0], training=True))
        grads = tape.gradient(value, keras_model.trainable_weights)
        k_opt.apply_gradients(zip(grads, keras_model.trainable_weights))
        worst = 0.0
        for i, (t, k) in enumerate(pairs):
            mapped = keras_weights(t.kind.split("+")[0], t.obj, flatten=flatten_before(pairs, i)) or []
            trainable = len(k.obj.trainable_weights)  # not the running statistics: PyTorch updates its running
            for mine, theirs, w0 in list(zip(mapped, k.obj.get_weights(), start[i]))[:trainable]:  # variance unbiased
                # against the larger of how far it moved and its size: a parameter that barely moves (a dead
                # unit's bias) still differs by an ulp of itself after a step
                scale = max(_max(mine - w0) if mine.shape == w0.shape else 0.0, _max(mine), 1e-30)
                worst = max(worst, float(np.abs(mine - theirs).max(initial=0.0)) / scale)
        out.append({"step": step, "max relative parameter difference": worst,
                    "within": worst <= rtol * len(pairs) * step})
    return out


__all__ = ["Pair", "PairError", "PairResult", "compare_models"]
