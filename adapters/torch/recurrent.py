"""PyTorch builders: RNN, LSTM and GRU through time.

Canonical W_ih (I, G H) and W_hh (H, G H) are the transposes of torch's
weight_ih_l0 (G H, I) and weight_hh_l0 (G H, H), in torch's own gate order
(LSTM i, f, g, o; GRU r, z, n); the biases are bias_ih_l0 and bias_hh_l0 as
they are. The modules take and return states with a leading num_layers axis.
"""

from ...reference import Convention
from ...reference.recurrent import param_names
from ..base import Built, param, same
from .core import builder, nn, set_, transpose


def _recurrent(module, t, states=("h0",)):
    """Load the canonical weights into a one-layer batch-first module; apply returns
    y, h_n (and c_n) with the num_layers axis squeezed."""
    for name, canonical, convert in (("weight_ih_l0", "W_ih", transpose), ("weight_hh_l0", "W_hh", transpose),
                                     ("bias_ih_l0", "b_ih", None), ("bias_hh_l0", "b_hh", None)):
        set_(getattr(module, name), t[canonical] if convert is None else convert(t[canonical]))
    params = (param(module.weight_ih_l0, "W_ih", transpose), param(module.weight_hh_l0, "W_hh", transpose),
              param(module.bias_ih_l0, "b_ih"), param(module.bias_hh_l0, "b_hh"))

    def apply(t):
        init = tuple(t[s].unsqueeze(0) for s in states)
        y, last = module(t["x"], init if len(init) > 1 else init[0])
        last = last if isinstance(last, tuple) else (last,)
        return {"y": y, **{name: s.squeeze(0) for name, s in zip(("h_n", "c_n"), last)}}

    return Built(apply, params)


def _recurrent_sizes(t):
    return dict(input_size=t["W_ih"].shape[0], hidden_size=t["W_hh"].shape[0], num_layers=1, bias=True,
                batch_first=True, dropout=0.0, bidirectional=False)


@builder("rnn")
def rnn(t, a, dtype):
    return _recurrent(nn().RNN(**_recurrent_sizes(t), nonlinearity=a["nonlinearity"], dtype=dtype), t)


@builder("lstm")
def lstm(t, a, dtype):
    return _recurrent(nn().LSTM(**_recurrent_sizes(t), proj_size=0, dtype=dtype), t, ("h0", "c0"))


def _reset_before(case):
    if not case.attrs["reset_after"]:
        return ("torch.nn.GRU only implements reset_after=True (the reset gate multiplies h W_hn + b_hn); "
                "reset_after=False (r h_{t-1} before the matmul) has no PyTorch module")


@builder("gru", refuses=_reset_before)
def gru(t, a, dtype):
    return _recurrent(nn().GRU(**_recurrent_sizes(t), dtype=dtype), t)


def _deep(cls, t, layers, directions, states=("h0",), **options):
    """nn.LSTM / nn.GRU with num_layers and bidirectional: torch's own parameter names
    (weight_ih_l1, weight_ih_l0_reverse, ...) are the canonical ones, weights transposed;
    states and final states are (L D, N, H) in both."""
    H = t["W_hh_l0"].shape[0]
    module = cls(input_size=t["W_ih_l0"].shape[0], hidden_size=H, num_layers=layers, bias=True, batch_first=True,
                 dropout=0.0, bidirectional=directions == 2, **options)
    params = ()
    for s in param_names(layers, directions):
        for weight, canonical, convert in (("weight_ih", "W_ih", transpose), ("weight_hh", "W_hh", transpose),
                                           ("bias_ih", "b_ih", None), ("bias_hh", "b_hh", None)):
            p = getattr(module, weight + s)
            set_(p, t[canonical + s] if convert is None else convert(t[canonical + s]))
            params += (param(p, canonical + s, convert or same),)

    rnn_utils, T = nn().utils.rnn, t["x"].shape[1]

    def apply(t):
        init = tuple(t[s] for s in states)
        x = t["x"]
        if "lengths" in t:  # a padded batch, as in _packed
            x = rnn_utils.pack_padded_sequence(x, t["lengths"], batch_first=True, enforce_sorted=False)
        y, last = module(x, init if len(init) > 1 else init[0])
        if "lengths" in t:
            y, _ = rnn_utils.pad_packed_sequence(y, batch_first=True, padding_value=0.0, total_length=T)
        last = last if isinstance(last, tuple) else (last,)
        return {"y": y, **dict(zip(("h_n", "c_n"), last))}

    return Built(apply, params)


@builder("stacked_lstm")
def stacked_lstm(t, a, dtype):
    return _deep(nn().LSTM, t, 2, 1, ("h0", "c0"), proj_size=0, dtype=dtype)


@builder("stacked_gru")
def stacked_gru(t, a, dtype):
    return _deep(nn().GRU, t, 2, 1, dtype=dtype)


@builder("bidirectional_lstm")
def bidirectional_lstm(t, a, dtype):
    return _deep(nn().LSTM, t, 1, 2, ("h0", "c0"), proj_size=0, dtype=dtype)


@builder("bidirectional_gru")
def bidirectional_gru(t, a, dtype):
    return _deep(nn().GRU, t, 1, 2, dtype=dtype)


# ---- variable-length sequences

MASKED = Convention({}, "pack_padded_sequence(enforce_sorted=False) + pad_packed_sequence(padding_value=0, "
                        "total_length=T): padded steps keep the state, get no gradient, and y is 0 there "
                        "(padded_output 'zeros' only); h_n, c_n are the states after each sequence's last "
                        "valid step; measured")


def _packed(module_cls, t, a, dtype, states=("h0",), **options):
    """A one-layer module run the way PyTorch users run a padded batch: pack_padded_sequence
    (enforce_sorted=False: the module sorts by length and unsorts states and outputs),
    the module on the packed sequence, pad_packed_sequence back to T with zeros."""
    rnn_utils = nn().utils.rnn
    built = _recurrent(module_cls(**_recurrent_sizes(t), dtype=dtype, **options), t, states)
    T = t["x"].shape[1]

    def apply(t):
        packed = rnn_utils.pack_padded_sequence(t["x"], t["lengths"], batch_first=True, enforce_sorted=False)
        out = built.apply({**t, "x": packed})
        y, _ = rnn_utils.pad_packed_sequence(out["y"], batch_first=True, padding_value=0.0, total_length=T)
        return {**out, "y": y if a["return_sequences"] else y[:, -1]}

    return Built(apply, built.params)


def _keras_masking(case):
    if case.attrs["route"] != "mask":
        return ("a keras.layers.Masking layer is Keras' way to give the lengths; PyTorch has one, packed sequences "
                "(pack_padded_sequence), run under route 'mask'")


def _repeated_output(case):
    repeated = (["pad_packed_sequence fills padded steps with one constant (padding_value); y repeating the last "
                 "valid output (Keras' zero_output_for_mask=False) has no PyTorch form"]
                if case.attrs["padded_output"] != "zeros" else [])
    return repeated + [why for why in [_keras_masking(case)] if why]


@builder("masked_rnn", convention=MASKED, refuses=_repeated_output)
def masked_rnn(t, a, dtype):
    return _packed(nn().RNN, t, a, dtype, nonlinearity=a["nonlinearity"])


@builder("masked_lstm", convention=MASKED, refuses=_repeated_output)
def masked_lstm(t, a, dtype):
    return _packed(nn().LSTM, t, a, dtype, ("h0", "c0"), proj_size=0)


@builder("masked_gru", convention=MASKED, refuses=_repeated_output)
def masked_gru(t, a, dtype):
    return _packed(nn().GRU, t, a, dtype)


@builder("masked_bidirectional_lstm", convention=MASKED, refuses=_keras_masking)
def masked_bidirectional_lstm(t, a, dtype):
    return _deep(nn().LSTM, t, 1, 2, ("h0", "c0"), proj_size=0, dtype=dtype)


@builder("masked_bidirectional_gru", convention=MASKED, refuses=_keras_masking)
def masked_bidirectional_gru(t, a, dtype):
    return _deep(nn().GRU, t, 1, 2, dtype=dtype)
