"""Running a ported pair: each side's layers in order, paired, loaded with the same weights, run
forward and backward once, and every paired layer run again by itself on the other side's values.

PyTorch: forward hooks read each compared module's input and output in call order (and keep
the output's gradient with ``retain_grad``: the gradient arriving there), full backward hooks
the gradient it sends to its input (where its input is a tensor: not for a PackedSequence);
one ``loss.backward()``. Keras: the same model's graph with every compared layer's input and output
as outputs, under one GradientTape that also differentiates with respect to them.
"""

from __future__ import annotations

import difflib
import warnings
from dataclasses import dataclass, field

import numpy as np

from ..tensorflow.core import keras, tf
from ..torch.core import torch
from .layers import (ACTIVATIONS, channels_last, flatten_order, keras_kind, keras_weights, layouts,
                     to_keras_layout, to_torch_layout, torch_kind)


class PairError(ValueError):
    """A pair that cannot be compared as given: the message names what is wrong."""


@dataclass
class Unit:
    """One compared layer on one side: its name, kind, the object, and what a run recorded."""

    name: str
    kind: str
    obj: object
    fused: object = None  # PyTorch: the activation module folded into this one (Keras' Dense(activation=...))
    channels_last: bool = False  # Keras: whether its tensors hold channels last
    x: np.ndarray | None = None      # input (its own side's layout)
    y: np.ndarray | None = None      # output
    cot: np.ndarray | None = None    # the gradient arriving at the output
    gx: np.ndarray | None = None     # the gradient it sends to its input
    grads: list = field(default_factory=list)  # its parameters' gradients (Keras: trainable_weights order)
    alt: dict = field(default_factory=dict)  # PyTorch recurrent: {"seq": (y, cot), "last": (y, cot)}, by Keras' form
    packed: bool = False  # PyTorch: its input was a PackedSequence (variable lengths)


RECURRENT = ("lstm", "gru", "rnn")


# ---- PyTorch


def _first(value):
    """A module's output tensor (LSTM: its sequence output; MultiheadAttention: its attention output)."""
    return value[0] if isinstance(value, tuple) else value


def torch_run(module, inputs, loss, train: bool):
    """Run ``module`` on ``inputs`` (NumPy, PyTorch's layout), ``loss(output) -> scalar`` and
    backward. (units in call order, output, loss value, input gradients)."""
    T = torch()
    module.train(train)
    units, order, handles, kept = {}, [], [], {}
    for name, m in module.named_modules():
        kind = torch_kind(m)
        if kind is None:
            continue
        if getattr(m, "inplace", False):
            m.inplace = False  # a full backward hook cannot see through an in-place op; the values are the same

        def forward(mod, args, out, name=name, kind=kind):
            if name in units:
                return
            order.append(name)
            x = args[0] if args and T.is_tensor(args[0]) else None
            if kind in RECURRENT:  # (output, h_n or (h_n, c_n)): the sequence, and the last layer's last state
                seq, state = out
                h = state[0] if isinstance(state, tuple) else state
                if isinstance(seq, T.nn.utils.rnn.PackedSequence):
                    seq = T.nn.utils.rnn.pad_packed_sequence(seq, batch_first=mod.batch_first)[0]
                refs = {"seq": seq, "last": h}
            else:
                refs = {"y": _first(out)}
            for r in refs.values():
                if r.requires_grad:
                    r.retain_grad()
            kept[name] = refs
            units[name] = Unit(name, kind, mod, x=_np(x), y=_np(refs.get("y", refs.get("seq"))),
                               packed=bool(args) and isinstance(args[0], T.nn.utils.rnn.PackedSequence))

        def backward(mod, grad_in, grad_out, name=name):
            unit = units.get(name)
            if unit is not None and unit.gx is None and grad_in and grad_in[0] is not None:
                unit.gx = _np(grad_in[0])

        handles += [m.register_forward_hook(forward), m.register_full_backward_hook(backward)]
    try:
        for p in module.parameters():
            p.grad = None
        dtype = next((p.dtype for p in module.parameters()), T.float32)
        xs = [T.tensor(a, dtype=dtype, requires_grad=True) if np.asarray(a).dtype.kind == "f"
              else T.as_tensor(a) for a in inputs]
        out = module(*xs)
        value = loss(out)
        with warnings.catch_warnings():  # the first layer's input (ids) needs no gradient: nothing to say
            warnings.filterwarnings("ignore", message="Full backward hook is firing")
            value.backward()
    finally:
        for h in handles:
            h.remove()
    ordered = [units[n] for n in order]
    for unit in ordered:
        unit.grads = [None if p.grad is None else _np(p.grad) for p in unit.obj.parameters()]
        refs = kept[unit.name]
        if unit.kind in RECURRENT:
            h = refs["last"]
            unit.alt = {"seq": (_np(refs["seq"]), _np(refs["seq"].grad)),
                        "last": (_np(h[-1]), None if h.grad is None else _np(h.grad[-1]))}
            unit.y, unit.cot = unit.alt["seq"]
        else:
            unit.cot = _np(refs["y"].grad)
    return ordered, _np(_first(out)), float(value.detach()), [_np(x.grad) if x.grad is not None else None
                                                              for x in xs]


def _np(t):
    if t is None:
        return None
    return t.detach().cpu().numpy() if hasattr(t, "detach") else np.asarray(t)


# ---- Keras


def keras_units(model) -> list[Unit]:
    last = dict(zip([id(layer) for layer in model.layers], layouts(model.layers)))
    return [Unit(layer.name, kind, layer, channels_last=last[id(layer)]) for layer in model.layers
            if (kind := keras_kind(layer)) is not None]


def _fused(layer) -> str | None:
    """The activation a Keras Dense or Conv fuses, as a kind (None: none)."""
    activation = layer.get_config().get("activation") if keras_kind(layer) in ("dense", "conv1d", "conv2d") else None
    return None if activation in (None, "linear") else ACTIVATIONS.get(activation, activation)


def keras_run(model, units: list[Unit], inputs, loss, train: bool):
    """Run ``model`` on ``inputs`` (NumPy, Keras' layout), ``loss(output) -> scalar``, and the
    gradient of the loss with respect to every unit's input and output and every weight."""
    K, T = keras(), tf()
    single = [u for u in units if _single_input(u.obj)]
    probe = K.Model(model.inputs, [model.outputs[0]] + [u.obj.output for u in units]
                    + [u.obj.input for u in single])
    xs = [T.constant(a) for a in inputs]
    with T.GradientTape() as tape:
        for x in xs:
            if x.dtype.is_floating:
                tape.watch(x)
        outs = probe(xs if len(xs) > 1 else xs[0], training=train)
        value = loss(outs[0])
    ys, ins = outs[1:1 + len(units)], outs[1 + len(units):]
    weights = [w for u in units for w in u.obj.trainable_weights]
    grads = tape.gradient(value, [*weights, *ys, *xs], unconnected_gradients=T.UnconnectedGradients.ZERO)
    at = 0
    for u in units:
        n = len(u.obj.trainable_weights)
        u.grads, at = [np.asarray(T.convert_to_tensor(g)) for g in grads[at:at + n]], at + n
    for u, y, g in zip(units, ys, grads[len(weights):len(weights) + len(units)]):
        u.y, u.cot = np.asarray(y), np.asarray(g)
    for u, x in zip(single, ins):
        u.x = np.asarray(x)
    input_grads = [np.asarray(g) if x.dtype.is_floating else None for x, g in zip(xs, grads[-len(xs):])]
    return np.asarray(outs[0]), float(value), input_grads


def _single_input(layer) -> bool:
    try:
        return not isinstance(layer.input, (list, tuple, dict))
    except (AttributeError, ValueError):
        return False


def keras_local(layer, x, cot, train: bool):
    """The Keras layer alone on ``x`` (Keras' layout), backward from ``cot``: (output, the gradient
    it sends to x, its weights' gradients in trainable_weights order)."""
    T = tf()
    x = T.constant(x)
    floating = x.dtype.is_floating
    with T.GradientTape() as tape:
        if floating:
            tape.watch(x)
        y = layer(x, training=train)
    sources = ([x] if floating else []) + list(layer.trainable_weights)
    grads = tape.gradient(y, sources, output_gradients=T.constant(cot, dtype=y.dtype),
                          unconnected_gradients=T.UnconnectedGradients.ZERO)
    gx = np.asarray(grads[0]) if floating else None
    return np.asarray(y), gx, [np.asarray(T.convert_to_tensor(g)) for g in grads[int(floating):]]


# ---- pairing


def fold_activations(t_units: list[Unit], k_units: list[Unit]) -> list[Unit]:
    """PyTorch units with a Keras twin that fuses an activation (Dense(activation="relu")): the
    module and the activation module right after it become one unit, whose output is the
    activation's."""
    fused_kinds = {f"{u.kind}+{act}" for u in k_units if (act := _fused(u.obj))}
    out, i = [], 0
    while i < len(t_units):
        u = t_units[i]
        nxt = t_units[i + 1] if i + 1 < len(t_units) else None
        if nxt is not None and f"{u.kind}+{nxt.kind}" in fused_kinds:
            out.append(Unit(u.name, f"{u.kind}+{nxt.kind}", u.obj, fused=nxt.obj, x=u.x, y=nxt.y, cot=nxt.cot,
                            gx=u.gx, grads=u.grads))
            i += 2
        else:
            out.append(u)
            i += 1
    return out


def pair_units(t_units: list[Unit], k_units: list[Unit], given: dict | None = None):
    """``(pairs, unpaired)``: pairs (torch unit, keras unit) in call order, by kind (a sequence
    alignment of the two lists of kinds), after the ``given`` {torch name: keras name} pairs;
    unpaired: "torch NAME (KIND)" / "keras NAME (KIND)" for every unit left over."""
    def kind(u, keras_side):
        act = _fused(u.obj) if keras_side else None
        return f"{u.kind}+{act}" if act else u.kind

    given = dict(given or {})
    by_torch = {u.name: u for u in t_units}
    by_keras = {u.name: u for u in k_units}
    bad = [f"torch {n}" for n in given if n not in by_torch] + [f"keras {n}" for n in given.values()
                                                                 if n not in by_keras]
    if bad:
        raise PairError("pairing names no such layer: " + ", ".join(bad)
                        + f" (torch: {', '.join(by_torch)}; keras: {', '.join(by_keras)})")
    fixed = [(by_torch[t], by_keras[k]) for t, k in given.items()]
    ts = [u for u in t_units if u.name not in given]
    ks = [u for u in k_units if u.name not in given.values()]
    matcher = difflib.SequenceMatcher(None, [u.kind for u in ts], [kind(u, True) for u in ks], autojunk=False)
    pairs = fixed + [(ts[b.a + i], ks[b.b + i]) for b in matcher.get_matching_blocks() for i in range(b.size)]
    position = {u.name: i for i, u in enumerate(t_units)}
    pairs.sort(key=lambda p: position[p[0].name])
    for t, k in pairs:  # a recurrent layer's output as the Keras layer gives it: the sequence, or the last state
        if t.alt:
            t.y, t.cot = t.alt["seq" if k.obj.get_config().get("return_sequences") else "last"]
    paired_t, paired_k = {t.name for t, _ in pairs}, {k.name for _, k in pairs}
    unpaired = ([f"torch {u.name} ({u.kind})" for u in t_units if u.name not in paired_t]
                + [f"keras {u.name} ({kind(u, True)})" for u in k_units if u.name not in paired_k])
    return pairs, unpaired


def flatten_before(pairs, i: int):
    """The flatten_order for pair i when it is a dense layer right after a channels-last Flatten."""
    if i == 0 or not pairs[i][0].kind.startswith("dense"):
        return None
    t_prev, k_prev = pairs[i - 1]
    if t_prev.kind != "flatten" or t_prev.x is None or t_prev.x.ndim < 3 or not channels_last(k_prev.obj):
        return None
    return flatten_order(t_prev.x.shape)


def transfer(pairs) -> None:
    """Load every paired Keras layer with its PyTorch twin's weights (and statistics)."""
    for i, (t, k) in enumerate(pairs):
        weights = keras_weights(t.kind.split("+")[0], t.obj, flatten=flatten_before(pairs, i))
        if weights is None:
            continue
        have = [w.shape for w in k.obj.get_weights()]
        if [tuple(w.shape) for w in weights] != [tuple(s) for s in have]:
            raise PairError(f"cannot load torch {t.name} ({type(t.obj).__name__}) into keras {k.name} "
                            f"({type(k.obj).__name__}): its weights map to shapes {[w.shape for w in weights]}, "
                            f"the Keras layer holds {have}")
        k.obj.set_weights([w.astype(k.obj.get_weights()[j].dtype) for j, w in enumerate(weights)])


def keras_inputs_for(model, inputs: list) -> tuple[list, str]:
    """The inputs in the Keras model's layout: as they are where its input shape takes them, moved
    channels-last where that is what it takes; else PairError. Also what was done, in words."""
    said = []
    out = []
    shapes = [tuple(t.shape) for t in model.inputs]
    if len(shapes) != len(inputs):
        raise PairError(f"the Keras model takes {len(shapes)} input(s), the pair gives {len(inputs)}")
    for j, (a, want) in enumerate(zip(inputs, shapes)):
        a = np.asarray(a)
        fits = len(want) == a.ndim and all(w is None or w == s for w, s in zip(want, a.shape))
        moved = np.moveaxis(a, 1, -1) if a.ndim >= 3 else None
        fits_moved = moved is not None and len(want) == a.ndim and all(w is None or w == s for w, s in
                                                                      zip(want, moved.shape))
        if fits and fits_moved and moved.shape != a.shape:
            raise PairError(f"inputs[{j}] {a.shape} fits the Keras model's input {want} both as it is and "
                            "channels-last: give keras_inputs to say which")
        if fits:
            out.append(a)
        elif fits_moved:
            out.append(np.ascontiguousarray(moved))
            said.append(f"inputs[{j}] {a.shape} moved channels-last to {moved.shape} for the Keras model")
        else:
            raise PairError(f"inputs[{j}] has shape {a.shape} (PyTorch's layout); the Keras model takes {want}, "
                            "neither as it is nor channels-last: the two models do not take the same input")
    return out, "; ".join(said)


def layouts_agree(t: Unit, k: Unit, what: str) -> np.ndarray | None:
    """Keras' ``what`` ("y", "cot", "x") of a paired unit in PyTorch's layout (a Flatten's in
    PyTorch's C, H, W order), or None when no layout makes the shapes agree."""
    mine, theirs = getattr(t, what), getattr(k, what)
    if mine is None or theirs is None:
        return None
    if t.kind == "flatten" and what in ("y", "cot") and t.x is not None and t.x.ndim >= 3 and channels_last(k.obj):
        return np.asarray(theirs)[..., flatten_order(t.x.shape)]
    # the input of a layer is in the layout of the one before it; a flatten's input is channels-last, its output not
    cl = channels_last(k.obj) if what == "x" and k.kind == "flatten" else k.channels_last
    return to_torch_layout(theirs, mine.shape, cl)


def keras_layout(t: Unit, k: Unit, value: np.ndarray, like: np.ndarray, order: np.ndarray | None = None):
    """A PyTorch value of a paired unit in the Keras layout of ``like``: a Flatten's output (or
    the input of the dense layer after it: ``order``, its flatten_order) reordered into Keras'
    H, W, C order."""
    if order is None and t.kind == "flatten" and t.x is not None and t.x.ndim >= 3 and channels_last(k.obj):
        order = flatten_order(t.x.shape)
    if order is not None and value.ndim == 2 and value.shape[-1] == order.size:
        out = np.empty_like(value)
        out[..., order] = value
        return out
    return to_keras_layout(value, like.shape, k.channels_last or (k.kind == "flatten" and channels_last(k.obj)))


KERAS_TO_TORCH_LAYOUT = to_torch_layout  # re-exported for the tests
