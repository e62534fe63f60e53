"""Keras builders: SimpleRNN, LSTM and GRU through time."""

import numpy as np

from ...reference import Convention
from ..base import Built, Param, param
from .core import builder, keras, tf

# Keras stores the kernel (I, G H) and recurrent kernel (H, G H) in the canonical
# (in, out) layout, with its own gate order: LSTM i, f, c, o is PyTorch's i, f, g, o
# (no reordering); GRU z, r, h is PyTorch's r, z, n with the first two blocks
# swapped. SimpleRNN and LSTM hold ONE bias for PyTorch's two: it is loaded with
# b_ih + b_hh, and its gradient is the gradient of each. GRU(reset_after=True)
# holds both, as bias (2, 3H): row 0 the input bias, row 1 the recurrent one.


def _gate_blocks(order):
    """A column permutation of a (.., G H) array: block k of the result is block order[k]."""
    def permute(v):
        blocks = np.split(np.asarray(v), len(order), axis=-1)
        return np.concatenate([blocks[k] for k in order], axis=-1)
    return permute


_GRU_ORDER = _gate_blocks((1, 0, 2))  # r, z, n <-> z, r, h (its own inverse)


def _same(v):
    return v


def _load(layer, t, shape, bias, reorder=_same, suffix=""):
    """Build a Keras RNN layer (unless built) for inputs of ``shape`` and load the
    canonical kernel, recurrent kernel and bias of names ending in ``suffix``
    (``bias(var, suffix) -> (value, Param)``); returns its Params."""
    if not layer.built:
        layer.build(tuple(shape))
    cell = layer.cell
    cell.kernel.assign(reorder(t["W_ih" + suffix].numpy()))
    cell.recurrent_kernel.assign(reorder(t["W_hh" + suffix].numpy()))
    value, bias_param = bias(cell.bias, suffix)
    cell.bias.assign(value)
    return (param(cell.kernel, "W_ih" + suffix, reorder), param(cell.recurrent_kernel, "W_hh" + suffix, reorder),
            bias_param)


def _recurrent(layer, t, bias, reorder=_same, states=("h0",)):
    """One Keras RNN layer holding the case's weights; apply returns y, h_n (and c_n)."""
    params = _load(layer, t, t["x"].shape, bias, reorder)

    def apply(t):
        y, *last = layer(t["x"], initial_state=[t[s] for s in states])
        return {"y": y, **dict(zip(("h_n", "c_n"), last))}

    return Built(apply, params)


def _summed_bias(t, reorder=_same):
    """One Keras bias standing for b_ih + b_hh: loaded with the sum, its gradient is each one's."""
    def bias(var, suffix=""):
        ih, hh = "b_ih" + suffix, "b_hh" + suffix
        return (reorder((t[ih] + t[hh]).numpy()),
                Param(var, (ih, hh), lambda g: {ih: reorder(g), hh: reorder(g)}))
    return bias


def _two_biases(t):
    """GRU(reset_after=True)'s bias (2, 3H): input bias, recurrent bias, each in Keras' gate order."""
    def bias(var, suffix=""):
        ih, hh = "b_ih" + suffix, "b_hh" + suffix
        return (np.stack([_GRU_ORDER(t[ih].numpy()), _GRU_ORDER(t[hh].numpy())]),
                Param(var, (ih, hh), lambda g: {ih: _GRU_ORDER(g[0]), hh: _GRU_ORDER(g[1])}))
    return bias


def _rnn_options(t, dtype, suffix=""):
    """Every option, explicitly; the initializers are zeros because the case's weights are
    assigned right after the build (Keras' orthogonal initializer's QR is most of a build)."""
    return dict(units=t["W_hh" + suffix].shape[0], use_bias=True, dropout=0.0, recurrent_dropout=0.0,
                return_sequences=True, return_state=True, go_backwards=False, stateful=False, unroll=False,
                kernel_initializer="zeros", recurrent_initializer="zeros", bias_initializer="zeros", dtype=dtype)


def _keras_lstm(t, dtype, suffix="", **options):
    return keras().layers.LSTM(activation="tanh", recurrent_activation="sigmoid", unit_forget_bias=False,
                               use_cudnn=False, **{**_rnn_options(t, dtype, suffix), **options})


def _keras_gru(t, dtype, suffix="", reset_after=True, **options):
    return keras().layers.GRU(activation="tanh", recurrent_activation="sigmoid", reset_after=reset_after,
                              use_cudnn=False, **{**_rnn_options(t, dtype, suffix), **options})


def _projection(case):
    if case.attrs.get("proj_size", 0):
        return ("keras.layers.LSTM has no projection (PyTorch's proj_size: h_t = (o * tanh(c_t)) W_hr): its output "
                "and state h are the cell's o * tanh(c_t), of size units")


@builder("rnn")
def rnn(t, a, dtype):
    layer = keras().layers.SimpleRNN(activation=a["nonlinearity"], **_rnn_options(t, dtype))
    return _recurrent(layer, t, _summed_bias(t))


@builder("lstm", refuses=_projection)
def lstm(t, a, dtype):
    return _recurrent(_keras_lstm(t, dtype), t, _summed_bias(t), states=("h0", "c0"))


@builder("gru")
def gru(t, a, dtype):
    """reset_after=True holds two biases, as bias (2, 3H); reset_after=False one (3H,),
    added on the input side (x W + b), with b_hn outside the reset: b_ih + b_hh."""
    layer = _keras_gru(t, dtype, reset_after=a["reset_after"])
    if not a["reset_after"]:
        return _recurrent(layer, t, _summed_bias(t, _GRU_ORDER), _GRU_ORDER)
    return _recurrent(layer, t, _two_biases(t), _GRU_ORDER)


# Stacks and directions, as Keras users write them: one layer per level, every one
# returning sequences (the next reads them), each given its slice of the (L D, N, H)
# initial states; a bidirectional level is keras.layers.Bidirectional
# (merge_mode="concat") with initial_state = forward states then backward states,
# returning [y, forward states, backward states]. A padded batch: every level is given
# the mask (mask=), or a Masking layer stands in front of the first (the case's route).

def _simple_rnn(a):
    return lambda t, dtype, suffix="", **options: keras().layers.SimpleRNN(
        activation=a["nonlinearity"], **{**_rnn_options(t, dtype, suffix), **options})


def _stack(make, bias, reorder, t, a, dtype, states, layers=None, directions=None):
    """The case's L levels x D directions (``layers``/``directions`` None: the attributes
    num_layers/bidirectional), weights suffixed as PyTorch names them."""
    layers = a["num_layers"] if layers is None else layers
    directions = (2 if a["bidirectional"] else 1) if directions is None else directions
    options = {"zero_output_for_mask": True} if "lengths" in t else {}  # pad_packed_sequence's zeros
    N, T, size = t["x"].shape
    levels, params = [], ()
    for level in range(layers):
        suffix = f"_l{level}"
        if directions == 1:
            layer = make(t, dtype, suffix, **options)
            params += _load(layer, t, (N, T, size), bias, reorder, suffix)
        else:
            layer = keras().layers.Bidirectional(make(t, dtype, suffix, **options), merge_mode="concat", dtype=dtype)
            layer.build((N, T, size))
            params += (_load(layer.forward_layer, t, None, bias, reorder, suffix)
                       + _load(layer.backward_layer, t, None, bias, reorder, suffix + "_reverse"))
        levels.append(layer)
        size = directions * t["W_hh" + suffix].shape[0]
    first = _masked_call(levels[0], t, a, dtype) if "lengths" in t else (
        lambda t, init: levels[0](t["x"], initial_state=init))
    mask = tf().constant(np.arange(T)[None, :] < t["lengths"].numpy()[:, None]) if (
        "lengths" in t and a["route"] == "mask") else None
    k = len(states)

    def apply(t):
        last = {name: [] for name in ("h_n", "c_n")[:k]}
        y = None
        for level, layer in enumerate(levels):
            init = [t[s][level * directions + d] for d in range(directions) for s in states]
            out = first(t, init) if level == 0 else layer(y, initial_state=init, **({"mask": mask} if mask is not None
                                                                                    else {}))
            y, finals = out[0], out[1:]
            for d in range(directions):
                for i, name in enumerate(last):
                    last[name].append(finals[d * k + i])
        return {"y": y, **{name: tf().stack(v) for name, v in last.items()}}

    return Built(apply, params)


def _rnn_stack(t, a, dtype, layers=None, directions=None):
    return _stack(_simple_rnn(a), _summed_bias(t), _same, t, a, dtype, ("h0",), layers, directions)


def _lstm_stack(t, a, dtype, layers=None, directions=None):
    return _stack(_keras_lstm, _summed_bias(t), _same, t, a, dtype, ("h0", "c0"), layers, directions)


def _gru_stack(t, a, dtype, layers=None, directions=None):
    return _stack(_keras_gru, _two_biases(t), _GRU_ORDER, t, a, dtype, ("h0",), layers, directions)


builder.stacks({"rnn": _rnn_stack, "lstm": _lstm_stack, "gru": _gru_stack}, lstm_refuses=_projection)


# Variable-length sequences as Keras users give them: a boolean mask (N, T) passed as
# mask=, or a keras.layers.Masking layer in front, which masks the steps whose
# features all equal mask_value (the padded steps of x are set to it first; 0.0
# unless some valid step is all zeros, then an integer above every |x|): the
# case's ``route``. zero_output_for_mask=True is padded_output "zeros",
# False (Keras' default) "repeat"; return_sequences=False returns the last step's
# output. Keras 3 hands a Masking layer's mask on only to a layer called with one
# tensor argument: with initial_state (the case's h0, c0, always passed: their
# gradients are checked) the mask is dropped (see the known divergence).

def _masking_value(x, valid):
    # TensorFlow reads subnormals as 0 (denormals-are-zero): Masking(0) would drop a
    # valid step of subnormals as padding (measured: x = 8.5e-39, float32), so such a
    # step counts as zero here too.
    zero_steps = np.all(np.abs(x) < np.finfo(x.dtype).tiny, axis=-1) & valid
    return 0.0 if not zero_steps.any() else float(np.ceil(np.abs(x).max())) + 1.0


MASKED = Convention(
    {}, "a mask (mask= or a Masking layer: the case's route) keeps the state and passes no gradient at a padded "
        "step; y there is the previous output repeated by default (zero_output_for_mask=False: padded_output "
        "'repeat', the state after the last valid step) or 0 (zero_output_for_mask=True: 'zeros'); "
        "return_sequences=False returns the last step's output, so 0 for a short sequence under "
        "zero_output_for_mask=True; measured")
MASKED_BIDIRECTIONAL = Convention(
    {}, "Bidirectional(merge_mode='concat') over a mask (mask= or a Masking layer: the case's route): the backward "
        "layer (go_backwards) reads the whole padded sequence reversed, so its masked steps come first and keep the "
        "initial state: the valid part is processed reversed, as PyTorch's packed sequences do; Bidirectional forces "
        "zero_output_for_mask when it returns sequences, so y is 0 at padded steps; measured")


def _masked_call(layer, t, a, dtype):
    """``call(t, initial_state)``: the layer on x masked by the case's lengths, by the
    case's route (mask=, or a Masking layer)."""
    x, lengths = t["x"].numpy(), t["lengths"].numpy()
    valid = np.arange(x.shape[1])[None, :] < lengths[:, None]
    if a["route"] == "masking_layer":
        value = _masking_value(x, valid)
        masking = keras().layers.Masking(mask_value=value, dtype=dtype)

        def call(t, init):
            padded = tf().where(valid[:, :, None], t["x"], tf().constant(value, dtype=dtype))
            return layer(masking(padded), initial_state=init)
        return call
    return lambda t, init: layer(t["x"], mask=tf().constant(valid), initial_state=init)


def _masked(make, bias, reorder, t, a, dtype, states):
    layer = make(t, dtype, return_sequences=a["return_sequences"],
                 zero_output_for_mask=a["padded_output"] == "zeros")
    params = _load(layer, t, t["x"].shape, bias, reorder)
    call = _masked_call(layer, t, a, dtype)

    def apply(t):
        y, *last = call(t, [t[s] for s in states])
        return {"y": y, **dict(zip(("h_n", "c_n"), last))}

    return Built(apply, params)


MASKED_STACKED = Convention(
    {}, "a stack given the mask at every level (mask=; a Masking layer in front of the first under route "
        "masking_layer), each level with zero_output_for_mask=True (0 at padded steps, as pad_packed_sequence), "
        "bidirectional levels as in Bidirectional over a mask (the backward layer's padded steps come first and keep "
        "the initial state); measured")

for _name, _build, _fixed, _convention in (
        ("masked_bidirectional_rnn", _rnn_stack, (1, 2), MASKED_BIDIRECTIONAL),
        ("masked_bidirectional_lstm", _lstm_stack, (1, 2), MASKED_BIDIRECTIONAL),
        ("masked_bidirectional_gru", _gru_stack, (1, 2), MASKED_BIDIRECTIONAL),
        ("masked_stacked_rnn", _rnn_stack, (), MASKED_STACKED),
        ("masked_stacked_lstm", _lstm_stack, (), MASKED_STACKED),
        ("masked_stacked_gru", _gru_stack, (), MASKED_STACKED)):
    builder(_name, convention=_convention, refuses=_projection)(
        lambda t, a, dtype, _build=_build, _fixed=_fixed: _build(t, a, dtype, *_fixed))


@builder("masked_rnn", convention=MASKED)
def masked_rnn(t, a, dtype):
    return _masked(_simple_rnn(a), _summed_bias(t), _same, t, a, dtype, ("h0",))


@builder("masked_lstm", convention=MASKED, refuses=_projection)
def masked_lstm(t, a, dtype):
    return _masked(_keras_lstm, _summed_bias(t), _same, t, a, dtype, ("h0", "c0"))


@builder("masked_gru", convention=MASKED)
def masked_gru(t, a, dtype):
    return _masked(_keras_gru, _two_biases(t), _GRU_ORDER, t, a, dtype, ("h0",))
