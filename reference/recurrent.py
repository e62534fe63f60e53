"""Recurrent layers: a simple RNN (tanh or ReLU), an LSTM and a GRU; one layer, one direction.

Canonical layout (batch first, PyTorch's gate order, weights ``(in, out)`` as for
``dense``): with G gates (RNN 1, LSTM 4, GRU 3) and hidden size H,

    x (N, T, I),  h0 (N, H)  [and c0 (N, H) for the LSTM],
    W_ih (I, G H),  W_hh (H, G H),  b_ih (G H,),  b_hh (G H,)

-> outputs y (N, T, H) (every h_t), h_n (N, H) (the last h_t) and, for the LSTM,
c_n (N, H) (the last cell state); each has its own cotangent. Column block k of
W_ih, W_hh, b_ih, b_hh (columns k H .. (k + 1) H - 1) belongs to gate k:

    LSTM  k = 0 i (input), 1 f (forget), 2 g (cell candidate), 3 o (output)
    GRU   k = 0 r (reset), 1 z (update), 2 n (new)

So W_ih is the transpose of PyTorch's ``weight_ih_l0`` (G H, I) and W_hh of
``weight_hh_l0``; b_ih and b_hh are ``bias_ih_l0`` and ``bias_hh_l0``. Keras
stores the kernel as (I, G H) already, with its own gate order: LSTM i, f, c, o
(the same as PyTorch's), GRU z, r, h (r and z swapped); the adapters reorder.

Every step is a few matmuls over the whole batch, the loop over time is the only
Python loop, and the backward pass is explicit backpropagation through time:
it walks t = T-1 .. 0 carrying dL/dh_t (and dL/dc_t) back, and collects the
gradient of every step's pre-activations, a_t = x_t W_ih + b_ih (input side,
``da_i``) and h_{t-1} W_hh + b_hh (recurrent side, ``da_h``), from which the
weight gradients are one contraction each after the loop:

    gW_ih = sum_t x_tᵀ da_i[t],   gb_ih = sum_{t,n} da_i[t],   gx[:, t] = da_i[t] W_ihᵀ,
    gW_hh = sum_t h_{t-1}ᵀ da_h[t],  gb_hh = sum_{t,n} da_h[t],  gh0 = dL/dh_{-1}.

sigma is the logistic function; sigma' = sigma (1 - sigma), tanh' = 1 - tanh^2.
"""

from __future__ import annotations

import numpy as np

from .activations import _sigmoid
from .spec import require

GATES = {"rnn": 1, "lstm": 4, "gru": 3}


def _check(kind, x, h0, W_ih, W_hh, b_ih, b_hh, c0=None):
    """Shapes of the canonical layout; returns (N, T, I, H)."""
    g = GATES[kind]
    require(x.ndim == 3, "x", f"expected (N, T, I), got shape {x.shape}")
    n, t, i = x.shape
    require(h0.ndim == 2 and h0.shape[0] == n, "h0", f"expected ({n}, H) for x {x.shape}, got {h0.shape}")
    h = h0.shape[1]
    require(W_ih.shape == (i, g * h), "W_ih", f"expected ({i}, {g * h}) (I, {g} H), got {W_ih.shape}")
    require(W_hh.shape == (h, g * h), "W_hh", f"expected ({h}, {g * h}) (H, {g} H), got {W_hh.shape}")
    require(b_ih.shape == (g * h,), "b_ih", f"expected ({g * h},), got {b_ih.shape}")
    require(b_hh.shape == (g * h,), "b_hh", f"expected ({g * h},), got {b_hh.shape}")
    if c0 is not None:
        require(c0.shape == h0.shape, "c0", f"expected {h0.shape} like h0, got {c0.shape}")
    return n, t, i, h


def _input_projection(x, W_ih, b_ih):
    """x_t W_ih + b_ih for every step at once: (N, T, G H)."""
    return np.einsum("nti,ij->ntj", x, W_ih) + b_ih


def _weight_grads(x, h_prev, W_ih, W_hh, da_i, da_h):
    """The gradients shared by the three cells, from the stacked pre-activation
    gradients da_i, da_h (N, T, G H) and the states h_{t-1} (N, T, H)."""
    return {"x": np.einsum("ntj,ij->nti", da_i, W_ih),
            "W_ih": np.einsum("nti,ntj->ij", x, da_i), "b_ih": da_i.sum(axis=(0, 1)),
            "W_hh": np.einsum("nth,ntj->hj", h_prev, da_h), "b_hh": da_h.sum(axis=(0, 1))}


def rnn(x, h0, W_ih, W_hh, b_ih, b_hh, *, nonlinearity):
    """Elman RNN (tanh or ReLU), batch first: one gate, G = 1.

        a_t = x_t W_ih + b_ih + h_{t-1} W_hh + b_hh,   h_t = act(a_t),   h_{-1} = h0
        y = (h_0 .. h_{T-1}) on axis 1,   h_n = h_{T-1}

    Shapes: x (N, T, I), h0 (N, H), W_ih (I, H), W_hh (H, H), b_ih, b_hh (H,).
    Gradients (dh_t = g_y[:, t] + [t = T-1] g_h_n + da_{t+1} W_hhᵀ):
        da_t = dh_t act'(a_t),  da_i = da_h = da;  gh0 = da_0 W_hhᵀ.
    act' is 1 - h_t^2 for tanh, [a_t > 0] for ReLU: ReLU'(0) = 0 (both frameworks).
    """
    require(nonlinearity in ("tanh", "relu"), "nonlinearity", f"expected 'tanh' or 'relu', got {nonlinearity!r}")
    _check("rnn", x, h0, W_ih, W_hh, b_ih, b_hh)
    a_in = _input_projection(x, W_ih, b_ih)
    h, hs, slopes = h0, [], []
    for t in range(x.shape[1]):
        a = a_in[:, t] + h @ W_hh + b_hh
        if nonlinearity == "tanh":
            h = np.tanh(a)
            slopes.append(1.0 - h * h)
        else:
            h = np.maximum(a, 0.0)
            slopes.append((a > 0).astype(np.float64))
        hs.append(h)
    y = np.stack(hs, axis=1)
    return {"y": y, "h_n": y[:, -1]}, (x, h0, W_ih, W_hh, y, np.stack(slopes, axis=1))


def rnn_vjp(res, g):
    x, h0, W_ih, W_hh, y, slopes = res
    da = np.empty_like(y)
    dh = g["h_n"]
    for t in range(x.shape[1] - 1, -1, -1):
        da[:, t] = (g["y"][:, t] + dh) * slopes[:, t]
        dh = da[:, t] @ W_hh.T
    h_prev = np.concatenate([h0[:, None], y[:, :-1]], axis=1)
    return {**_weight_grads(x, h_prev, W_ih, W_hh, da, da), "h0": dh}


def lstm(x, h0, c0, W_ih, W_hh, b_ih, b_hh):
    """LSTM, batch first, PyTorch's formulation; gates i, f, g, o (G = 4, in that
    order along the columns of W_ih, W_hh, b_ih, b_hh):

        a_t = x_t W_ih + b_ih + h_{t-1} W_hh + b_hh = [a_i | a_f | a_g | a_o]
        i = sigma(a_i),  f = sigma(a_f),  g = tanh(a_g),  o = sigma(a_o)
        c_t = f c_{t-1} + i g,   h_t = o tanh(c_t),   (h_{-1}, c_{-1}) = (h0, c0)
        y = (h_0 .. h_{T-1}) on axis 1,  h_n = h_{T-1},  c_n = c_{T-1}

    Shapes: x (N, T, I), h0, c0 (N, H), W_ih (I, 4H), W_hh (H, 4H), b_ih, b_hh (4H,).
    Gradients, backwards in t, with dh_t = g_y[:, t] + [t = T-1] g_h_n + da_{t+1} W_hhᵀ
    and dc_t = [t = T-1] g_c_n + dc_{t+1} f_{t+1} + dh_t o tanh'(c_t):
        da_o = dh_t tanh(c_t) o (1 - o),   da_i = dc_t g i (1 - i),
        da_f = dc_t c_{t-1} f (1 - f),      da_g = dc_t i (1 - g^2),
        da_i = da_h = [da_i | da_f | da_g | da_o];  gh0 = da_0 W_hhᵀ,  gc0 = dc_0 f_0.
    Smooth everywhere.
    """
    _check("lstm", x, h0, W_ih, W_hh, b_ih, b_hh, c0)
    H = h0.shape[1]
    a_in = _input_projection(x, W_ih, b_ih)
    h, c, hs, cs, gates = h0, c0, [], [], []
    for t in range(x.shape[1]):
        a = a_in[:, t] + h @ W_hh + b_hh
        i, f, o = _sigmoid(a[:, :H]), _sigmoid(a[:, H:2 * H]), _sigmoid(a[:, 3 * H:])
        gg = np.tanh(a[:, 2 * H:3 * H])
        c = f * c + i * gg
        h = o * np.tanh(c)
        hs.append(h)
        cs.append(c)
        gates.append(np.concatenate([i, f, gg, o], axis=1))
    y, c_all = np.stack(hs, axis=1), np.stack(cs, axis=1)
    return ({"y": y, "h_n": y[:, -1], "c_n": c_all[:, -1]},
            (x, h0, c0, W_ih, W_hh, y, c_all, np.stack(gates, axis=1)))


def lstm_vjp(res, g):
    x, h0, c0, W_ih, W_hh, y, c_all, gates = res
    H = h0.shape[1]
    da = np.empty_like(gates)
    dh, dc = g["h_n"], g["c_n"]
    for t in range(x.shape[1] - 1, -1, -1):
        i, f, gg, o = (gates[:, t, k * H:(k + 1) * H] for k in range(4))
        c_prev = c_all[:, t - 1] if t else c0
        tc = np.tanh(c_all[:, t])
        dh = g["y"][:, t] + dh
        dc = dc + dh * o * (1.0 - tc * tc)
        da[:, t] = np.concatenate([dc * gg * i * (1.0 - i), dc * c_prev * f * (1.0 - f),
                                   dc * i * (1.0 - gg * gg), dh * tc * o * (1.0 - o)], axis=1)
        dh = da[:, t] @ W_hh.T
        dc = dc * f
    h_prev = np.concatenate([h0[:, None], y[:, :-1]], axis=1)
    return {**_weight_grads(x, h_prev, W_ih, W_hh, da, da), "h0": dh, "c0": dc}


def gru(x, h0, W_ih, W_hh, b_ih, b_hh):
    """GRU, batch first, PyTorch's formulation (Keras' ``reset_after=True``): the
    reset gate multiplies the recurrent projection after its bias; gates r, z, n
    (G = 3, in that order along the columns of W_ih, W_hh, b_ih, b_hh):

        [u_r | u_z | u_n] = x_t W_ih + b_ih,   [w_r | w_z | w_n] = h_{t-1} W_hh + b_hh
        r = sigma(u_r + w_r),  z = sigma(u_z + w_z),  n = tanh(u_n + r w_n)
        h_t = (1 - z) n + z h_{t-1},   h_{-1} = h0
        y = (h_0 .. h_{T-1}) on axis 1,  h_n = h_{T-1}

    Shapes: x (N, T, I), h0 (N, H), W_ih (I, 3H), W_hh (H, 3H), b_ih, b_hh (3H,).
    Gradients, backwards in t, with dh_t = g_y[:, t] + [t = T-1] g_h_n + (carry from t+1):
        dn = dh_t (1 - z) (1 - n^2),  dz = dh_t (h_{t-1} - n) z (1 - z),  dr = dn w_n r (1 - r)
        da_i = [dr | dz | dn],  da_h = [dr | dz | dn r]
        carry to h_{t-1}: dh_t z + da_h W_hhᵀ;  gh0 is the carry out of t = 0.
    Smooth everywhere.
    """
    _check("gru", x, h0, W_ih, W_hh, b_ih, b_hh)
    H = h0.shape[1]
    u_all = _input_projection(x, W_ih, b_ih)
    h, hs, saved = h0, [], []
    for t in range(x.shape[1]):
        u, w = u_all[:, t], h @ W_hh + b_hh
        r = _sigmoid(u[:, :H] + w[:, :H])
        z = _sigmoid(u[:, H:2 * H] + w[:, H:2 * H])
        n = np.tanh(u[:, 2 * H:] + r * w[:, 2 * H:])
        h = (1.0 - z) * n + z * h
        hs.append(h)
        saved.append(np.concatenate([r, z, n, w[:, 2 * H:]], axis=1))
    y = np.stack(hs, axis=1)
    return {"y": y, "h_n": y[:, -1]}, (x, h0, W_ih, W_hh, y, np.stack(saved, axis=1))


def gru_vjp(res, g):
    x, h0, W_ih, W_hh, y, saved = res
    H = h0.shape[1]
    N, T = x.shape[:2]
    da_i, da_h = np.empty((N, T, 3 * H)), np.empty((N, T, 3 * H))
    dh = g["h_n"]
    h_prev = np.concatenate([h0[:, None], y[:, :-1]], axis=1)
    for t in range(T - 1, -1, -1):
        r, z, n, w_n = (saved[:, t, k * H:(k + 1) * H] for k in range(4))
        dh = g["y"][:, t] + dh
        dn = dh * (1.0 - z) * (1.0 - n * n)
        dz = dh * (h_prev[:, t] - n) * z * (1.0 - z)
        dr = dn * w_n * r * (1.0 - r)
        da_i[:, t] = np.concatenate([dr, dz, dn], axis=1)
        da_h[:, t] = np.concatenate([dr, dz, dn * r], axis=1)
        dh = dh * z + da_h[:, t] @ W_hh.T
    return {**_weight_grads(x, h_prev, W_ih, W_hh, da_i, da_h), "h0": dh}
