"""Whole models: catalogue layers composed, the chain rule carried across them, every boundary kept.

A model is a list of ``Step``s, each a catalogue layer applied with fixed
attributes (its own forward and vjp: nothing is derived again here), followed by
the exact ops models need between layers (flatten in NCHW order, a residual add
of an earlier step's input, a mean over time or tokens). The flowing tensor
enters each step through the layer's ``flow`` arrays (an attention's query, key
and value all take it); fixed data (labels, lengths, masks) through ``data``;
parameters are the model's arrays named after the step, ``"3:dense.W"``. The
last step is a loss.

``run`` keeps every step's output; ``backward`` walks the steps in reverse and
keeps the cotangent arriving at each step's output and the gradient of every
parameter and of the input. A model catalogue entry (``model_mlp``, ...) returns
the loss as its one output and its gradients as any layer does; its ``trace``
adds kind ``out`` for each step's output and kind ``cot`` for the cotangent
arriving there, named after the step: what localizes a divergence to a layer.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .catalogue import LAYERS, S, batch_of, of_dim, registrar
from .case import Case
from .oracle import GRAD, OUT, Evaluation, ieee, named_outputs
from .sensitivity import Jitter, sensitivity
from .spec import Array, Choice, Edge, Float, Int, Labels, Layer, Lengths, Real


@dataclass(frozen=True)
class Step:
    index: int
    layer: str
    attrs: dict
    params: tuple = ()          # the layer's parameters; the model's array is f"{name}.{param}"
    flow: tuple = ("x",)        # the layer's arrays the flowing tensor enters
    data: dict = field(default_factory=dict)   # {layer array: model array}: labels, lengths, masks
    zeros: tuple = ()           # layer arrays given zeros of the flow's batch (a recurrent layer's initial states)
    output: str | None = None   # which output flows on, for a layer with several
    then: tuple = ()            # ops on the output: ("flatten",), ("add", j): + the input of step j, ("mean", axis)

    @property
    def name(self) -> str:
        return f"{self.index}:{self.layer}"

    def array(self, param: str) -> str:
        return f"{self.name}.{param}"


def _last_axis(layer, kw, attrs):
    """dense on (..., I): the oracle's dense takes (N, I); the leading axes are merged and split back."""
    lead = kw["x"].shape[:-1]
    out, res = layer.forward(**{**kw, "x": kw["x"].reshape(-1, kw["x"].shape[-1])}, **attrs)
    return out.reshape(*lead, out.shape[-1]), (res, lead)


def _apply(step: Step, kw: dict):
    layer = LAYERS[step.layer]
    if step.layer == "dense" and kw["x"].ndim > 2:
        out, res = _last_axis(layer, kw, step.attrs)
        return out, ("last_axis", res)
    return layer.forward(**kw, **step.attrs)


def _apply_vjp(step: Step, res, g):
    layer = LAYERS[step.layer]
    if isinstance(res, tuple) and len(res) == 2 and isinstance(res[0], str) and res[0] == "last_axis":
        (inner, lead) = res[1]
        grads = layer.vjp(inner, g.reshape(-1, g.shape[-1]))
        return {**grads, "x": grads["x"].reshape(*lead, grads["x"].shape[-1])}
    return layer.vjp(res, g)


def run(steps: list[Step], arrays: dict, jitter: Jitter = Jitter(), given: dict | None = None):
    """The forward pass: (the loss, residuals: every step's inputs, output and the layer's residuals).
    ``jitter`` perturbs each step's output as its rounding would (see ``sensitivity``). ``given``
    ({step name: output}) replaces each step's output, for the steps after it, by that one: every
    step computed from somebody else's inputs (see ``local``)."""
    flow, entering, kept = arrays["x"], {}, []
    for step in steps:
        entering[step.index] = flow
        kw = {**{a: flow for a in step.flow}, **{a: arrays[m] for a, m in step.data.items()},
              **{p: arrays[step.array(p)] for p in step.params}}
        for a in step.zeros:  # zero initial states (N, H): the batch of the flow, H of the recurrent weights
            kw[a] = np.zeros((flow.shape[0], arrays[step.array("W_hh")].shape[0]))
        out, res = _apply(step, kw)
        y = out[step.output] if step.output else out
        if step is not steps[-1]:
            y = jitter(step.name, y)
        flow = y if given is None else np.asarray(given[step.name], dtype=np.float64)
        for op in step.then:
            if op[0] == "flatten":
                flow = flow.reshape(flow.shape[0], -1)
            elif op[0] == "add":
                flow = flow + entering[op[1]]
            elif op[0] == "mean":
                flow = flow.mean(axis=op[1])
        kept.append((step, kw, res, out, y))
    return flow, {"kept": kept, "x": arrays["x"], "jitter": jitter}


def backward(steps: list[Step], residuals: dict, g, given: dict | None = None) -> tuple[dict, dict, dict]:
    """(gradients of the input and every parameter, every step's output, the cotangent arriving at it).
    The forward's ``jitter`` perturbs each cotangent arriving at a step's output too. ``given``
    ({step name: cotangent}) replaces the cotangent arriving at each step by that one before the
    step carries it back (the cotangent returned is the one computed)."""
    grads, outs, cots = {}, {}, {}
    pending: dict[int, np.ndarray] = {}  # cotangents owed to the flow entering a step, from residual adds
    g_flow = np.asarray(g, dtype=np.float64)
    for step, _, res, out, y in reversed(residuals["kept"]):
        g_y = g_flow
        for op in reversed(step.then):  # the cotangent of the flow back through the ops to y
            if op[0] == "flatten":
                g_y = g_y.reshape(y.shape)
            elif op[0] == "add":
                pending[op[1]] = pending.get(op[1], 0.0) + g_y
            elif op[0] == "mean":
                g_y = np.repeat(np.expand_dims(g_y, op[1]), y.shape[op[1]], axis=op[1]) / y.shape[op[1]]
        if step is not steps[-1]:
            g_y = residuals["jitter"]("cot " + step.name, g_y)
        outs[step.name], cots[step.name] = np.asarray(y, dtype=np.float64), g_y
        if given is not None:
            g_y = np.asarray(given[step.name], dtype=np.float64)
        if step.output:  # the other outputs of the layer carry no cotangent
            g_y = {n: (g_y if n == step.output else np.zeros_like(v)) for n, v in out.items()}
        layer_grads = _apply_vjp(step, res, g_y)
        grads.update({step.array(p): layer_grads[p] for p in step.params})
        g_flow = sum((layer_grads[a] for a in step.flow if a in layer_grads), start=np.zeros(()))
        g_flow = g_flow + pending.pop(step.index, 0.0)
    if residuals["x"].dtype.kind == "f":
        grads["x"] = np.broadcast_to(g_flow, residuals["x"].shape).copy()
    return grads, outs, cots


def model(name: str):
    """The oracle pair (forward, vjp) and the trace of the zoo's model ``name`` (see ``STEPS``)."""
    def forward(jitter: Jitter = Jitter(), **arrays_and_attrs):
        arrays = {k: v for k, v in arrays_and_attrs.items() if isinstance(v, np.ndarray)}
        attrs = {k: v for k, v in arrays_and_attrs.items() if k not in arrays}
        steps = steps_of(name, arrays, attrs)
        with ieee():
            loss, res = run(steps, {**arrays, **derived(name, arrays)}, jitter)
        return loss, {**res, "steps": steps}

    def vjp(res, g):
        with ieee():
            return backward(res["steps"], res, g)[0]

    def trace(res, g):
        with ieee():
            _, outs, cots = backward(res["steps"], res, g)
        return {"out": outs, "cot": cots}

    return forward, vjp, trace


def local(name: str, case, outs: dict, cots: dict) -> dict:
    """Every step of model ``name`` recomputed by the oracle from another runner's own values:
    ``outs`` and ``cots`` (kinds "out" and "cot" of its trace) replace each step's inputs and
    the cotangent arriving at its output. ``{"out": {step: output}, "cot": {step: cotangent
    it is sent}, "grad": {parameter or x: gradient}}``: where these differ from the runner's
    own, the step itself computed differently, whatever it was given."""
    arrays = {k: np.asarray(v, dtype=np.float64) if v.dtype.kind == "f" else v for k, v in case.arrays.items()}
    steps = steps_of(name, arrays, case.attrs)
    with ieee():
        _, res = run(steps, {**arrays, **derived(name, arrays)}, given=outs)
        grads, local_outs, local_cots = backward(steps, res, next(iter(case.cotangents.values())), given=cots)
    return {"out": local_outs, "cot": local_cots, "grad": grads}


def step_cases(case, residuals: dict, cotangents: dict) -> list:
    """Each step of a model case as a case of its own layer, with the oracle's answer for it:
    ``[(step, Case, Evaluation)]``, the step's inputs as the oracle's forward pass gave them
    (float64, in the model's dtype's name) and the cotangent arriving at its output (``cotangents``:
    the model trace's kind "cot"). What a known divergence of a layer is asked about, inside a model."""
    found = []
    for step, kw, res, out, _ in residuals["kept"]:
        layer, g = LAYERS[step.layer], cotangents[step.name]
        if isinstance(res, tuple) and len(res) == 2 and isinstance(res[0], str) and res[0] == "last_axis":
            (res, _), out = res[1], out.reshape(-1, out.shape[-1])  # dense over (..., I) as the (N, I) it computes
            kw, g = {**kw, "x": kw["x"].reshape(-1, kw["x"].shape[-1])}, g.reshape(-1, g.shape[-1])
        outputs = named_outputs(layer, out)
        cot = {n: (np.asarray(g) if n == (step.output or n) else np.zeros_like(v)) for n, v in outputs.items()}
        sub = Case(step.layer, case.dtype, dict(step.attrs), {k: np.asarray(v) for k, v in kw.items()}, cot)
        with ieee():
            grads = layer.vjp(res, cot if len(cot) > 1 else next(iter(cot.values())))
        found.append((step, sub, Evaluation({OUT: outputs, GRAD: grads}, lambda: 1.0, res)))
    return found


def exact_kinks(residuals: dict, cotangents: dict) -> list[str]:
    """The steps whose input sits exactly on a kink in the oracle's forward pass, with a
    cotangent arriving there: a relu input exactly 0, a max_pool2d window whose nonzero maximum
    is attained twice. A framework lands on either side by its own rounding of the steps before
    (a constant channel normalized to exactly 0 is 1e-17 somewhere, -1e-17 elsewhere), so its
    gradient may take the other branch: a difference of derivative, not of rounding."""
    found = []
    for step, kw, _, _, _ in residuals["kept"]:
        x, g = np.asarray(kw.get("x", 0.0)), np.asarray(cotangents[step.name])
        if step.layer == "relu":
            hit = np.any((x == 0) & (g != 0))
        elif step.layer == "max_pool2d":  # the zoo's pooling: 2 x 2 windows, stride 2, no padding
            n, c, h, w = x.shape
            windows = x[:, :, :h // 2 * 2, :w // 2 * 2].reshape(n, c, h // 2, 2, w // 2, 2)
            top = windows.max(axis=(3, 5), keepdims=True)
            # a tie of relu's zeros sends its gradient to a relu that passes none back, either way
            tied = ((windows == top).sum(axis=(3, 5)) > 1) & (top[:, :, :, 0, :, 0] != 0)
            hit = np.any(tied & (g != 0))
        else:
            continue
        if hit:
            found.append(step.name)
    return found


# ---- the zoo: each model's steps, from the case's arrays and attributes --------------

CROSS_ENTROPY = {"label_smoothing": 0.0, "reduction": "mean", "target_type": "indices", "ignore_index": -100}
ACTIVATIONS = {"relu": {}, "tanh": {}, "sigmoid": {}, "gelu": {"approximate": "none"}}


def _loss(index: int) -> Step:
    return Step(index, "cross_entropy", CROSS_ENTROPY, flow=("logits",), data={"labels": "labels"})


def _dense(index: int, then: tuple = ()) -> Step:
    return Step(index, "dense", {}, ("W", "b"), then=then)


def mlp_steps(arrays: dict, a: dict) -> list[Step]:
    """dense + activation, ``depth`` times (each block after the first adds its input back when
    ``residual``), then dense to the classes and softmax cross-entropy."""
    steps = []
    for k in range(a["depth"]):
        i = 2 * k + 1
        steps += [_dense(i), Step(i + 1, a["activation"], ACTIVATIONS[a["activation"]],
                                  then=(("add", i),) if a["residual"] and k else ())]
    return steps + [_dense(2 * a["depth"] + 1), _loss(2 * a["depth"] + 2)]


def _conv(index: int, then: tuple = ()) -> Step:
    return Step(index, "conv2d", {"batched": True, "stride_h": 1, "stride_w": 1, "dilation_h": 1, "dilation_w": 1,
                                  "groups": 1, "padding": "same", "pad_top": 0, "pad_bottom": 0, "pad_left": 0,
                                  "pad_right": 0}, ("W", "b"), then=then)


POOL = {"batched": True, "kernel_h": 2, "kernel_w": 2, "stride_h": 2, "stride_w": 2, "padding": "valid", "pad_h": 0,
        "pad_w": 0, "ceil_mode": False, "dilation_h": 1, "dilation_w": 1}


def cnn_steps(arrays: dict, a: dict) -> list[Step]:
    """conv2d, relu, max_pool2d, conv2d, batch_norm, relu, then global average pooling and dense, or
    (``head`` "flatten") a flatten of NCHW and dense: the flatten order is where a port goes wrong."""
    steps = [_conv(1), Step(2, "relu", {}), Step(3, "max_pool2d", POOL), _conv(4),
             Step(5, "batch_norm", {"eps": a["eps"]}, ("gamma", "beta"))]
    if a["head"] == "flatten":
        return steps + [Step(6, "relu", {}, then=(("flatten",),)), _dense(7), _loss(8)]
    return steps + [Step(6, "relu", {}), Step(7, "global_avg_pool2d", {}), _dense(8), _loss(9)]


def resnet_steps(arrays: dict, a: dict) -> list[Step]:
    """A stem conv2d and relu, ``blocks`` residual blocks (conv2d, batch_norm, relu, conv2d,
    batch_norm, + the block's input, relu), global average pooling, dense."""
    steps, eps = [_conv(1), Step(2, "relu", {})], {"eps": a["eps"]}
    for b in range(a["blocks"]):
        i = 3 + 6 * b
        steps += [_conv(i), Step(i + 1, "batch_norm", eps, ("gamma", "beta")), Step(i + 2, "relu", {}), _conv(i + 3),
                  Step(i + 4, "batch_norm", eps, ("gamma", "beta"), then=(("add", i),)), Step(i + 5, "relu", {})]
    i = 3 + 6 * a["blocks"]
    return steps + [Step(i, "global_avg_pool2d", {}), _dense(i + 1), _loss(i + 2)]


RECURRENT = ("masked_lstm", "masked_gru")


def sequence_steps(arrays: dict, a: dict) -> list[Step]:
    """embedding of token ids, an LSTM or GRU over sequences of ``lengths`` (zero initial
    states), its state after each sequence's last valid step, dense, softmax cross-entropy."""
    states = ("h0", "c0") if a["cell"] == "masked_lstm" else ("h0",)
    cell = Step(2, a["cell"], {"padded_output": "zeros", "return_sequences": True, "route": "mask"},
                ("W_ih", "W_hh", "b_ih", "b_hh"), data={"lengths": "lengths"}, zeros=states, output="h_n")
    return [Step(1, "embedding", {}, ("W",), flow=("ids",)), cell, _dense(3), _loss(4)]


NORMS = {"layer_norm": ("gamma", "beta"), "rms_norm": ("gamma",)}


def transformer_steps(arrays: dict, a: dict) -> list[Step]:
    """A pre-norm transformer encoder block over tokens (N, L, E) with a key padding mask from
    ``lengths``: norm, multi-head self-attention, + its input; norm, dense, gelu, dense, + its
    input; the mean over tokens, dense, softmax cross-entropy."""
    norm = {"axes": 1, "eps": a["eps"], **({"route": "rms_normalization"} if a["norm"] == "rms_norm" else {})}
    attention = Step(2, "multi_head_attention", {"num_heads": a["num_heads"], "need_weights": False},
                     ("W_q", "W_k", "W_v", "b_q", "b_k", "b_v", "W_o", "b_o"), flow=("query", "key", "value"),
                     data={"key_padding_mask": "mask"}, then=(("add", 1),))
    return [Step(1, a["norm"], norm, NORMS[a["norm"]]), attention, Step(3, a["norm"], norm, NORMS[a["norm"]]),
            _dense(4), Step(5, "gelu", {"approximate": "none"}), _dense(6, then=(("add", 3), ("mean", 1))),
            _dense(7), _loss(8)]


def padding_mask(arrays: dict) -> dict:
    """The keep-mask (N, L) of the tokens within each sequence's length: every query sees a key."""
    lengths, L = arrays["lengths"], arrays["x"].shape[1]
    return {"mask": (np.arange(L)[None, :] < lengths[:, None]).astype(np.float64)}


STEPS = {"model_mlp": mlp_steps, "model_cnn": cnn_steps, "model_resnet": resnet_steps,
         "model_sequence": sequence_steps, "model_transformer": transformer_steps}
DERIVED = {"model_transformer": padding_mask}


def steps_of(layer: str, arrays: dict, attrs: dict) -> list[Step]:
    """A model's steps (what a framework builds from, too)."""
    return STEPS[layer](arrays, attrs)


def derived(layer: str, arrays: dict) -> dict:
    """Arrays a model computes from the case's (the transformer's padding mask)."""
    return DERIVED[layer](arrays) if layer in DERIVED else {}


# ---- catalogue entries --------------------------------------------------------------
# Every model ends in softmax cross-entropy over K classes (mean). Weights are drawn in
# [-1, 1]: a deep sigmoid MLP then shows its vanishing gradient, a deep ReLU one its
# growth. The condition number of a case is measured by perturbation, as for a layer
# through time: how far a relative 2^-26 of every input, every layer's output and every
# cotangent arriving at one (each a result a framework rounds) moves the loss and the gradients.

register = registrar("models")
WEIGHTS = Real(-1.0, 1.0, edges=(0.0,))


def _condition(name):
    forward, vjp, _ = model(name)

    def condition(residuals, cotangents=None, **arrays_and_attrs) -> float:
        return max(1.0, sensitivity(forward, vjp, residuals, cotangents, intermediates=True, **arrays_and_attrs))

    return condition


def _register(name, dims, attrs, arrays, edges):
    forward, vjp, trace = model(name)
    register(Layer(name, forward, vjp, trace=trace, loss=True, condition=_condition(name), dims=dims, attrs=attrs,
                   arrays={"labels": Array(S("N"), Labels("K")), **arrays}, edges=(batch_of(1), *edges)))


def _param(shape, when=None, values=WEIGHTS):
    return Array(shape, values, param=True, when=when)


def _mlp_params():
    """Dense k (step 2k - 1): D -> H first, H -> H hidden, H -> K after the last hidden block."""
    arrays = {}
    for k in range(1, 10):
        def rows(d, a, k=k):
            return d.D if k == 1 else d.H

        def cols(d, a, k=k):
            return d.K if k == a["depth"] + 1 else d.H

        def present(a, k=k):
            return a["depth"] + 1 >= k

        arrays[f"{2 * k - 1}:dense.W"] = _param(lambda d, a, rows=rows, cols=cols: (rows(d, a), cols(d, a)), present)
        arrays[f"{2 * k - 1}:dense.b"] = _param(lambda d, a, cols=cols: (cols(d, a),), present)
    return arrays


_register(
    "model_mlp", {"N": Int(1, 4), "D": Int(1, 5), "H": Int(1, 6), "K": Int(2, 4), "L": Int(2, 8, edges=(8,))},
    {"depth": of_dim("L"), "activation": Choice(*ACTIVATIONS), "residual": Choice(False, True)},
    {"x": Array(S("N", "D")), **_mlp_params()},
    # the textbook contrast: a deep sigmoid MLP (vanishing), the same with ReLU, and with residual adds
    (Edge("deep_sigmoid", lambda c: c.attrs["depth"] == 8 and c.attrs["activation"] == "sigmoid"
          and not c.attrs["residual"], {"L": 8, "activation": "sigmoid", "residual": False}),
     Edge("deep_relu", lambda c: c.attrs["depth"] == 8 and c.attrs["activation"] == "relu" and not c.attrs["residual"],
          {"L": 8, "activation": "relu", "residual": False}),
     Edge("deep_residual", lambda c: c.attrs["depth"] == 8 and c.attrs["residual"], {"L": 8, "residual": True}),
     Edge("shallow", lambda c: c.attrs["depth"] == 2, {"L": 2})))


def _conv_params(index, channels_out, channels_in, kernel, when=None):
    return {f"{index}:conv2d.W": _param(lambda d, a: (channels_out(d), channels_in(d), kernel(d), kernel(d)), when),
            f"{index}:conv2d.b": _param(lambda d, a: (channels_out(d),), when)}


def _norm_params(index, channels, when=None):
    return {f"{index}:batch_norm.gamma": _param(lambda d, a: (channels(d),), when),
            f"{index}:batch_norm.beta": _param(lambda d, a: (channels(d),), when)}


def _flatten(a):
    return a["head"] == "flatten"


NORM_EPS = Float(1e-5, 1e-2, edges=(1e-5, 1e-3))

_register(
    "model_cnn", {"N": Int(1, 3), "C": Int(1, 3), "H": Int(4, 6), "W": Int(2, 6, like="H"), "F1": Int(1, 3),
                  "F2": Int(1, 3), "k1": Int(1, 3), "k2": Int(1, 3), "K": Int(2, 4)},
    {"head": Choice("global_average", "flatten"), "eps": NORM_EPS},
    {"x": Array(S("N", "C", "H", "W")),
     **_conv_params(1, lambda d: d.F1, lambda d: d.C, lambda d: d.k1),
     **_conv_params(4, lambda d: d.F2, lambda d: d.F1, lambda d: d.k2),
     **_norm_params(5, lambda d: d.F2),
     "7:dense.W": _param(lambda d, a: (d.F2 * (d.H // 2) * (d.W // 2), d.K), _flatten),
     "7:dense.b": _param(lambda d, a: (d.K,), _flatten),
     "8:dense.W": _param(lambda d, a: (d.F2, d.K), lambda a: not _flatten(a)),
     "8:dense.b": _param(lambda d, a: (d.K,), lambda a: not _flatten(a))},
    (Edge("flatten", lambda c: c.attrs["head"] == "flatten", {"head": "flatten"}),
     Edge("global_average", lambda c: c.attrs["head"] == "global_average", {"head": "global_average"})))


def _resnet_params():
    arrays = _conv_params(1, lambda d: d.F, lambda d: d.C, lambda d: d.k)
    for b in range(4):
        i, present = 3 + 6 * b, (lambda a, b=b: a["blocks"] > b)
        arrays.update({**_conv_params(i, lambda d: d.F, lambda d: d.F, lambda d: d.k, present),
                       **_norm_params(i + 1, lambda d: d.F, present),
                       **_conv_params(i + 3, lambda d: d.F, lambda d: d.F, lambda d: d.k, present),
                       **_norm_params(i + 4, lambda d: d.F, present)})
    for blocks in range(2, 5):  # the head's step index follows the blocks
        i, present = 4 + 6 * blocks, (lambda a, blocks=blocks: a["blocks"] == blocks)
        arrays.update({f"{i}:dense.W": _param(lambda d, a: (d.F, d.K), present),
                       f"{i}:dense.b": _param(lambda d, a: (d.K,), present)})
    return arrays


_register(
    "model_resnet", {"N": Int(1, 2), "C": Int(1, 3), "H": Int(2, 4), "W": Int(2, 4, like="H"), "F": Int(1, 3),
                     "k": Int(1, 3), "B": Int(2, 4), "K": Int(2, 4)},
    {"blocks": of_dim("B"), "eps": NORM_EPS},
    {"x": Array(S("N", "C", "H", "W")), **_resnet_params()},
    (Edge("four_blocks", lambda c: c.attrs["blocks"] == 4, {"B": 4}),))


def _cell(name):
    return lambda a: a["cell"] == name


def _recurrent_params():
    arrays = {}
    for cell, gates in (("masked_lstm", 4), ("masked_gru", 3)):
        arrays.update({f"2:{cell}.W_ih": _param(lambda d, a, g=gates: (d.E, g * d.H), _cell(cell)),
                       f"2:{cell}.W_hh": _param(lambda d, a, g=gates: (d.H, g * d.H), _cell(cell)),
                       f"2:{cell}.b_ih": _param(lambda d, a, g=gates: (g * d.H,), _cell(cell)),
                       f"2:{cell}.b_hh": _param(lambda d, a, g=gates: (g * d.H,), _cell(cell))})
    return arrays


_register(
    "model_sequence", {"N": Int(1, 3), "T": Int(1, 5, edges=(20,)), "V": Int(2, 6), "E": Int(1, 4), "H": Int(1, 4),
                       "K": Int(2, 4)},
    {"cell": Choice(*RECURRENT)},
    {"x": Array(S("N", "T"), Labels("V")), "lengths": Array(S("N"), Lengths("T")),
     "1:embedding.W": _param(S("V", "E")), **_recurrent_params(),
     "3:dense.W": _param(S("H", "K")), "3:dense.b": _param(S("K"))},
    (Edge("lstm", lambda c: c.attrs["cell"] == "masked_lstm", {"cell": "masked_lstm"}),
     Edge("gru", lambda c: c.attrs["cell"] == "masked_gru", {"cell": "masked_gru"}),
     Edge("long_sequence", lambda c: c.arrays["x"].shape[1] >= 20, {"T": 20}),
     Edge("mixed_lengths", lambda c: len(np.unique(c.arrays["lengths"])) > 1)))


def _norm(name):
    return lambda a: a["norm"] == name


def _transformer_params():
    arrays = {}
    for i in (1, 3):
        arrays.update({f"{i}:layer_norm.gamma": _param(lambda d, a: (d.heads * d.D,), _norm("layer_norm")),
                       f"{i}:layer_norm.beta": _param(lambda d, a: (d.heads * d.D,), _norm("layer_norm")),
                       f"{i}:rms_norm.gamma": _param(lambda d, a: (d.heads * d.D,), _norm("rms_norm"))})
    for w in ("W_q", "W_k", "W_v", "W_o"):
        arrays[f"2:multi_head_attention.{w}"] = _param(lambda d, a: (d.heads * d.D,) * 2)
    for b in ("b_q", "b_k", "b_v", "b_o"):
        arrays[f"2:multi_head_attention.{b}"] = _param(lambda d, a: (d.heads * d.D,))
    return {**arrays, "4:dense.W": _param(lambda d, a: (d.heads * d.D, d.F)), "4:dense.b": _param(S("F")),
            "6:dense.W": _param(lambda d, a: (d.F, d.heads * d.D)), "6:dense.b": _param(lambda d, a: (d.heads * d.D,)),
            "7:dense.W": _param(lambda d, a: (d.heads * d.D, d.K)), "7:dense.b": _param(S("K"))}


_register(
    "model_transformer", {"N": Int(1, 3), "L": Int(1, 4), "heads": Int(1, 2), "D": Int(1, 2), "F": Int(1, 4),
                          "K": Int(2, 4)},
    {"num_heads": of_dim("heads"), "norm": Choice(*NORMS), "eps": NORM_EPS},
    {"x": Array(lambda d, a: (d.N, d.L, d.heads * d.D)), "lengths": Array(S("N"), Lengths("L")),
     **_transformer_params()},
    (Edge("rms_norm", lambda c: c.attrs["norm"] == "rms_norm", {"norm": "rms_norm"}),
     Edge("padded", lambda c: bool(np.any(c.arrays["lengths"] < c.arrays["x"].shape[1]))),
     Edge("one_token", lambda c: c.arrays["x"].shape[1] == 1, {"L": 1})))
