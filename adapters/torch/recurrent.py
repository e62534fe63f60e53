"""PyTorch builders: RNN, LSTM and GRU through time.

Canonical W_ih (I, G H) and W_hh (H, G H) are the transposes of torch's
weight_ih_l0 (G H, I) and weight_hh_l0 (G H, H), in torch's own gate order
(LSTM i, f, g, o; GRU r, z, n); the biases are bias_ih_l0 and bias_hh_l0 as
they are. The modules take and return states with a leading num_layers axis.
"""

import dataclasses
import warnings

from ...reference import Convention
from ...reference.recurrent import param_names
from ..base import Built, param, same
from .core import builder, nn, set_, transpose


def _recurrent(module, t, states=("h0",)):
    """Load the canonical weights into a one-layer batch-first module; apply returns
    y, h_n (and c_n) with the num_layers axis squeezed."""
    names = (("weight_ih_l0", "W_ih", transpose), ("weight_hh_l0", "W_hh", transpose),
             ("bias_ih_l0", "b_ih", None), ("bias_hh_l0", "b_hh", None))
    if "W_hr" in t:
        names += (("weight_hr_l0", "W_hr", transpose),)
    for name, canonical, convert in names:
        set_(getattr(module, name), t[canonical] if convert is None else convert(t[canonical]))
    params = tuple(param(getattr(module, name), canonical, convert or same) for name, canonical, convert in names)

    def apply(t):
        init = tuple(t[s].unsqueeze(0) for s in states)
        y, last = module(t["x"], init if len(init) > 1 else init[0])
        last = last if isinstance(last, tuple) else (last,)
        return {"y": y, **{name: s.squeeze(0) for name, s in zip(("h_n", "c_n"), last)}}

    return Built(apply, params)


def _recurrent_sizes(t, gates, suffix=""):
    """One layer's sizes: the hidden size from W_ih (I, G H) (W_hh has P rows under a projection)."""
    return dict(input_size=t["W_ih" + suffix].shape[0], hidden_size=t["W_ih" + suffix].shape[1] // gates,
                num_layers=1, bias=True, batch_first=True, dropout=0.0, bidirectional=False)


def _quiet_projection(built: Built) -> Built:
    """The module's forward without torch's notice that oneDNN has no LSTM projection (it falls
    back to its own kernel, the one checked here): a projection is drawn on purpose, not news."""
    def apply(t):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="LSTM with projections is not supported with oneDNN")
            return built.apply(t)

    return dataclasses.replace(built, apply=apply)


def _projection(case):
    """nn.LSTM takes a projection smaller than its hidden size only."""
    proj, hidden = case.attrs.get("proj_size", 0), case.arrays["c0"].shape[-1]
    if proj and proj >= hidden:
        return (f"torch.nn.LSTM requires proj_size < hidden_size ('proj_size has to be smaller than hidden_size'); "
                f"proj_size {proj}, hidden size {hidden}")


@builder("rnn")
def rnn(t, a, dtype):
    return _recurrent(nn().RNN(**_recurrent_sizes(t, 1), nonlinearity=a["nonlinearity"], dtype=dtype), t)


@builder("lstm", refuses=_projection)
def lstm(t, a, dtype):
    return _quiet_projection(_recurrent(nn().LSTM(**_recurrent_sizes(t, 4), proj_size=a["proj_size"], dtype=dtype),
                                        t, ("h0", "c0")))


def _reset_before(case):
    if not case.attrs["reset_after"]:
        return ("torch.nn.GRU only implements reset_after=True (the reset gate multiplies h W_hn + b_hn); "
                "reset_after=False (r h_{t-1} before the matmul) has no PyTorch module")


@builder("gru", refuses=_reset_before)
def gru(t, a, dtype):
    return _recurrent(nn().GRU(**_recurrent_sizes(t, 3), dtype=dtype), t)


def _deep(cls, t, a, gates, layers=None, directions=None, states=("h0",), **options):
    """nn.RNN / nn.LSTM / nn.GRU with num_layers and bidirectional (the case's attributes
    where ``layers``/``directions`` are None): torch's own parameter names (weight_ih_l1,
    weight_ih_l0_reverse, weight_hr_l0, ...) are the canonical ones, weights transposed;
    states and final states are (L D, N, .) in both. A padded batch (lengths) runs as a
    packed sequence, as in _packed."""
    layers = a["num_layers"] if layers is None else layers
    directions = (2 if a["bidirectional"] else 1) if directions is None else directions
    module = cls(input_size=t["W_ih_l0"].shape[0], hidden_size=t["W_ih_l0"].shape[1] // gates, num_layers=layers,
                 bias=True, batch_first=True, dropout=0.0, bidirectional=directions == 2, **options)
    params = ()
    for s in param_names(layers, directions):
        for weight, canonical, convert in (("weight_ih", "W_ih", transpose), ("weight_hh", "W_hh", transpose),
                                           ("bias_ih", "b_ih", None), ("bias_hh", "b_hh", None),
                                           ("weight_hr", "W_hr", transpose)):
            if canonical + s not in t:  # W_hr: only with a projection
                continue
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


def _rnn(t, a, dtype, layers=None, directions=None):
    return _deep(nn().RNN, t, a, 1, layers, directions, nonlinearity=a["nonlinearity"], dtype=dtype)


def _lstm(t, a, dtype, layers=None, directions=None):
    return _quiet_projection(_deep(nn().LSTM, t, a, 4, layers, directions, ("h0", "c0"), proj_size=a["proj_size"],
                                   dtype=dtype))


def _gru(t, a, dtype, layers=None, directions=None):
    return _deep(nn().GRU, t, a, 3, layers, directions, dtype=dtype)


builder.stacks({"rnn": _rnn, "lstm": _lstm, "gru": _gru}, lstm_refuses=_projection)


# ---- variable-length sequences

MASKED = Convention({}, "pack_padded_sequence(enforce_sorted=False) + pad_packed_sequence(padding_value=0, "
                        "total_length=T): padded steps keep the state, get no gradient, and y is 0 there "
                        "(padded_output 'zeros' only); h_n, c_n are the states after each sequence's last "
                        "valid step; measured")


def _packed(module_cls, gates, t, a, dtype, states=("h0",), **options):
    """A one-layer module run the way PyTorch users run a padded batch: pack_padded_sequence
    (enforce_sorted=False: the module sorts by length and unsorts states and outputs),
    the module on the packed sequence, pad_packed_sequence back to T with zeros."""
    rnn_utils = nn().utils.rnn
    built = _recurrent(module_cls(**_recurrent_sizes(t, gates), dtype=dtype, **options), t, states)
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


def _masked_lstm_refusals(case):
    return _repeated_output(case) + [why for why in [_projection(case)] if why]


def _masked_deep_refusals(case):
    return [why for why in (_keras_masking(case), _projection(case) if "c0" in case.arrays else None) if why]


@builder("masked_rnn", convention=MASKED, refuses=_repeated_output)
def masked_rnn(t, a, dtype):
    return _packed(nn().RNN, 1, t, a, dtype, nonlinearity=a["nonlinearity"])


@builder("masked_lstm", convention=MASKED, refuses=_masked_lstm_refusals)
def masked_lstm(t, a, dtype):
    return _quiet_projection(_packed(nn().LSTM, 4, t, a, dtype, ("h0", "c0"), proj_size=a["proj_size"]))


@builder("masked_gru", convention=MASKED, refuses=_repeated_output)
def masked_gru(t, a, dtype):
    return _packed(nn().GRU, 3, t, a, dtype)


for _name, _build, _fixed in (("masked_bidirectional_rnn", _rnn, (1, 2)), ("masked_bidirectional_lstm", _lstm, (1, 2)),
                              ("masked_bidirectional_gru", _gru, (1, 2)), ("masked_stacked_rnn", _rnn, ()),
                              ("masked_stacked_lstm", _lstm, ()), ("masked_stacked_gru", _gru, ())):
    builder(_name, convention=MASKED, refuses=_masked_deep_refusals)(
        lambda t, a, dtype, _build=_build, _fixed=_fixed: _build(t, a, dtype, *_fixed))
