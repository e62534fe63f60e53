"""Recurrent layers: a simple RNN (tanh or ReLU), an LSTM (with or without a projection) and
a GRU; one layer or a stack of 2 or 3, one direction or both, over whole or padded sequences.

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

Internally the scan is time-major ((T, N, ...) arrays, preallocated, so every
step reads and writes contiguous rows), the input projection x W_ih + b_ih is one
matmul before the loop, and the weight gradients one matmul each after it.

Variable-length sequences (``valid`` (N, T), true for t < length): a padded step
neither changes the state nor receives gradient (h_t = h_{t-1}, c_t = c_{t-1}),
so h_n, c_n are the states after each sequence's last valid step. What y holds at
a padded step is ``padded_output``: "zeros" (PyTorch's pad_packed_sequence, Keras'
zero_output_for_mask=True) or "repeat" (the state, i.e. the last valid output
repeated: Keras' default, zero_output_for_mask=False).

Stacks and directions (``_deep``) compose the one-layer scan: layer l > 0 reads
layer l - 1's y; the reverse direction runs the same scan on each sequence's valid
part reversed in time (the whole sequence without lengths) and reverses its y
back; the directions' y are concatenated on the last axis (forward first). The
names say the structure: ``stacked_*`` are num_layers = 2 or 3 layers, one
direction or both (``bidirectional``), ``bidirectional_*`` one layer in both
directions, ``masked_*`` the same over a padded batch (lengths).

An LSTM projection (PyTorch's ``proj_size`` P > 0) maps each step's o tanh(c_t)
(N, H) through W_hr (H, P): the state h, and so y, h0, h_n and the rows of W_hh,
has P features; c keeps H.
"""

from __future__ import annotations

import numpy as np

from .activations import _sigmoid
from .catalogue import SUBNORMAL, S, attr_is, batch_of, registrar
from .sensitivity import through_time
from .spec import Array, Choice, Drawn, Edge, Int, Layer, Lengths, Real, require

GATES = {"rnn": 1, "lstm": 4, "gru": 3}


def _check(kind, x, h0, W_ih, W_hh, b_ih, b_hh, c0=None, W_hr=None, suffix=""):
    """Shapes of the canonical layout; returns (N, T, I, H). The state h has P = h0.shape[-1]
    features: H, or the projection's size with an LSTM projection W_hr (H, P)."""
    g = GATES[kind]
    require(x.ndim == 3, "x", f"expected (N, T, I), got shape {x.shape}")
    n, t, i = x.shape
    require(h0.ndim == 2 and h0.shape[0] == n, "h0", f"expected ({n}, H) for x {x.shape}, got {h0.shape}")
    p = h0.shape[1]
    h = p
    if W_hr is not None:
        require(W_hr.ndim == 2 and W_hr.shape[1] == p and W_hr.shape[0] >= 1, "W_hr" + suffix,
                f"expected (H, {p}) (hidden size, projection size = h0's {p}), got {W_hr.shape}")
        h = W_hr.shape[0]
    require(W_ih.shape == (i, g * h), "W_ih" + suffix, f"expected ({i}, {g * h}) (I, {g} H), got {W_ih.shape}")
    require(W_hh.shape == (p, g * h), "W_hh" + suffix,
            f"expected ({p}, {g * h}) ({'P' if W_hr is not None else 'H'}, {g} H), got {W_hh.shape}")
    require(b_ih.shape == (g * h,), "b_ih" + suffix, f"expected ({g * h},), got {b_ih.shape}")
    require(b_hh.shape == (g * h,), "b_hh" + suffix, f"expected ({g * h},), got {b_hh.shape}")
    if c0 is not None:
        require(c0.shape == (n, h), "c0", f"expected ({n}, {h}) (N, H), got {c0.shape}")
    return n, t, i, h


def _check_proj(proj_size, W_hr, suffix=""):
    """proj_size agrees with the projection given (0: none)."""
    require(isinstance(proj_size, (int, np.integer)) and not isinstance(proj_size, bool) and proj_size >= 0,
            "proj_size", f"expected an int >= 0, got {proj_size!r}")
    got = 0 if W_hr is None else W_hr.shape[-1]
    require(proj_size == got, "W_hr" + suffix,
            f"proj_size={proj_size} takes {'no W_hr' if not proj_size else f'W_hr (H, {proj_size})'}, got "
            f"{'none' if W_hr is None else W_hr.shape}")


# ---- the one-layer scan, time-major inside -----------------------------------

def _scan(kind, x, h0, c0, W_ih, W_hh, b_ih, b_hh, *, nonlinearity="tanh", reset_after=True, valid=None,
          padded_output="zeros", W_hr=None):
    """One layer, one direction: (y (N, T, P), h_n, c_n or None, residuals); P = H except
    with an LSTM projection W_hr (H, P)."""
    N, T, _ = x.shape
    H, P = W_hh.shape[1] // GATES[kind], h0.shape[1]
    xt = np.ascontiguousarray(x.transpose(1, 0, 2))
    u = np.matmul(xt, W_ih)
    u += b_ih
    hs = np.empty((T + 1, N, P))
    hs[0] = h0
    res = {"kind": kind, "x": xt, "W_ih": W_ih, "W_hh": W_hh, "hs": hs, "valid": None, "padded": padded_output,
           "reset_after": reset_after, "W_hr": W_hr}
    vt = None if valid is None else valid.T[:, :, None]  # (T, N, 1)
    if kind == "lstm":
        cs = np.empty((T + 1, N, H))
        cs[0] = c0
        acts, tcs = np.empty((T, N, 4 * H)), np.empty((T, N, H))
        ms = None if W_hr is None else np.empty((T, N, H))  # o tanh(c), before the projection
        for t in range(T):
            a = u[t] + hs[t] @ W_hh
            a += b_hh
            s = acts[t]
            s[:] = _sigmoid(a)
            s[:, 2 * H:3 * H] = np.tanh(a[:, 2 * H:3 * H])
            c = s[:, H:2 * H] * cs[t] + s[:, :H] * s[:, 2 * H:3 * H]
            tc = np.tanh(c)
            tcs[t] = tc
            h = s[:, 3 * H:] * tc
            if ms is not None:
                ms[t] = h
                h = h @ W_hr
            if vt is not None:
                c, h = np.where(vt[t], c, cs[t]), np.where(vt[t], h, hs[t])
            cs[t + 1], hs[t + 1] = c, h
        res.update(cs=cs, acts=acts, tcs=tcs, ms=ms)
    elif kind == "gru":
        rz, ns, aux = np.empty((T, N, 2 * H)), np.empty((T, N, H)), np.empty((T, N, H))
        W_n, b_n = W_hh[:, 2 * H:], b_hh[2 * H:]
        for t in range(T):
            if reset_after:  # r multiplies the recurrent projection, bias included
                w = hs[t] @ W_hh
                w += b_hh
                rz[t] = _sigmoid(u[t, :, :2 * H] + w[:, :2 * H])
                aux[t] = w[:, 2 * H:]
                n = np.tanh(u[t, :, 2 * H:] + rz[t, :, :H] * aux[t])
            else:  # r multiplies h before its matmul: aux is q = r h_{t-1}
                w = hs[t] @ W_hh[:, :2 * H]
                w += b_hh[:2 * H]
                rz[t] = _sigmoid(u[t, :, :2 * H] + w)
                np.multiply(rz[t, :, :H], hs[t], out=aux[t])
                wn = aux[t] @ W_n
                wn += b_n
                n = np.tanh(u[t, :, 2 * H:] + wn)
            ns[t] = n
            z = rz[t, :, H:]
            h = n + z * (hs[t] - n)  # (1 - z) n + z h_{t-1}
            hs[t + 1] = h if vt is None else np.where(vt[t], h, hs[t])
        res.update(rz=rz, ns=ns, aux=aux)
    else:
        slopes = np.empty((T, N, H))
        for t in range(T):
            a = u[t] + hs[t] @ W_hh
            a += b_hh
            if nonlinearity == "tanh":
                h = np.tanh(a)
                slopes[t] = 1.0 - h * h
            else:
                h = np.maximum(a, 0.0)
                slopes[t] = a > 0
            hs[t + 1] = h if vt is None else np.where(vt[t], h, hs[t])
        res.update(slopes=slopes)
    y = hs[1:]
    if vt is not None:
        res["valid"] = vt
        if padded_output == "zeros":
            y = np.where(vt, y, 0.0)
    return (y.transpose(1, 0, 2), hs[T], res["cs"][T] if kind == "lstm" else None, res)


def _scan_vjp(res, gy, g_hn, g_cn=None):
    """Gradients of one scan from the cotangents of y (N, T, P), h_n and c_n:
    {x, h0, c0 (LSTM), W_ih, W_hh, b_ih, b_hh, W_hr (a projection)}."""
    kind, xt, W_ih, W_hh, hs, vt = res["kind"], res["x"], res["W_ih"], res["W_hh"], res["hs"], res["valid"]
    G = GATES[kind]
    T, N, P, H = hs.shape[0] - 1, hs.shape[1], hs.shape[2], W_hh.shape[1] // G
    W_hr = res["W_hr"]
    dhs = None if W_hr is None else np.empty((T, N, P))  # dL/dh_t of a projected h_t = m_t W_hr
    gyt = gy.transpose(1, 0, 2)
    da_i = np.empty((T, N, G * H))
    da_h = da_i
    dH = np.array(g_hn, dtype=np.float64)
    dC = None if kind != "lstm" else np.array(g_cn, dtype=np.float64)
    repeat = res["padded"] == "repeat"
    W_hhT = W_hh.T
    if kind == "gru":
        rz, ns, aux, ra = res["rz"], res["ns"], res["aux"], res["reset_after"]
        da_h = np.empty((T, N, 3 * H))
        W_rzT, W_nT = W_hh[:, :2 * H].T, W_hh[:, 2 * H:].T
    for t in range(T - 1, -1, -1):
        # dh, dc: the gradient of this step's fresh h and c; pass_h, pass_c: what
        # a padded step hands on to t - 1 untouched
        if vt is None:
            dh, dc = dH + gyt[t], dC
        else:
            v = vt[t]
            if repeat:
                dH = dH + gyt[t]
                dh = np.where(v, dH, 0.0)
            else:
                dh = np.where(v, dH + gyt[t], 0.0)
            pass_h = np.where(v, 0.0, dH)
            if dC is not None:
                dc, pass_c = np.where(v, dC, 0.0), np.where(v, 0.0, dC)
        if kind == "lstm":
            s, tc = res["acts"][t], res["tcs"][t]
            i, f, g, o = s[:, :H], s[:, H:2 * H], s[:, 2 * H:3 * H], s[:, 3 * H:]
            if dhs is not None:  # through the projection: dL/dm_t = dL/dh_t W_hrᵀ
                dhs[t] = dh
                dh = dh @ W_hr.T
            dc = dc + dh * o * (1.0 - tc * tc)
            d = da_i[t]
            np.multiply(dc * g, i * (1.0 - i), out=d[:, :H])
            np.multiply(dc * res["cs"][t], f * (1.0 - f), out=d[:, H:2 * H])
            np.multiply(dc * i, 1.0 - g * g, out=d[:, 2 * H:3 * H])
            np.multiply(dh * tc, o * (1.0 - o), out=d[:, 3 * H:])
            dH = d @ W_hhT
            dC = dc * f
        elif kind == "gru":
            r, z, n = rz[t, :, :H], rz[t, :, H:], ns[t]
            dn = dh * (1.0 - z) * (1.0 - n * n)
            di, dr_h = da_i[t], da_h[t]
            np.multiply(dh * (hs[t] - n), z * (1.0 - z), out=di[:, H:2 * H])
            di[:, 2 * H:] = dn
            if ra:
                np.multiply(dn * aux[t], r * (1.0 - r), out=di[:, :H])
                dr_h[:, :2 * H] = di[:, :2 * H]
                np.multiply(dn, r, out=dr_h[:, 2 * H:])
                dH = dh * z + dr_h @ W_hhT
            else:
                dq = dn @ W_nT
                np.multiply(dq * hs[t], r * (1.0 - r), out=di[:, :H])
                dr_h[:] = di
                dH = dh * z + di[:, :2 * H] @ W_rzT + dq * r
        else:
            np.multiply(dh, res["slopes"][t], out=da_i[t])
            dH = da_i[t] @ W_hhT
        if vt is not None:
            dH += pass_h
            if dC is not None:
                dC += pass_c
    flat_i, flat_h = da_i.reshape(T * N, da_i.shape[-1]), da_h.reshape(T * N, da_h.shape[-1])  # N = 0: no -1
    xs = xt.reshape(T * N, xt.shape[-1])
    grads = {"x": (da_i @ W_ih.T).transpose(1, 0, 2), "W_ih": xs.T @ flat_i, "b_ih": flat_i.sum(axis=0),
             "b_hh": flat_h.sum(axis=0), "h0": dH}
    h_prev = hs[:-1].reshape(T * N, P)
    if kind == "gru" and not res["reset_after"]:  # the n block's recurrent input is q = r h_{t-1}
        gW = np.empty_like(W_hh)
        gW[:, :2 * H] = h_prev.T @ flat_h[:, :2 * H]
        gW[:, 2 * H:] = aux.reshape(T * N, H).T @ flat_h[:, 2 * H:]
        grads["W_hh"] = gW
    else:
        grads["W_hh"] = h_prev.T @ flat_h
    if kind == "lstm":
        grads["c0"] = dC
    if dhs is not None:
        grads["W_hr"] = res["ms"].reshape(T * N, H).T @ dhs.reshape(T * N, P)
    return grads


# ---- one layer, one direction ---------------------------------------------------

def rnn(x, h0, W_ih, W_hh, b_ih, b_hh, *, nonlinearity):
    """Elman RNN (tanh or ReLU), batch first: one gate, G = 1.

        a_t = x_t W_ih + b_ih + h_{t-1} W_hh + b_hh,   h_t = act(a_t),   h_{-1} = h0
        y = (h_0 .. h_{T-1}) on axis 1,   h_n = h_{T-1}

    Shapes: x (N, T, I), h0 (N, H), W_ih (I, H), W_hh (H, H), b_ih, b_hh (H,).
    Gradients (dh_t = g_y[:, t] + [t = T-1] g_h_n + da_{t+1} W_hhᵀ):
        da_t = dh_t act'(a_t),  da_i = da_h = da;  gh0 = da_0 W_hhᵀ.
    act' is 1 - h_t^2 for tanh, [a_t > 0] for ReLU: ReLU'(0) = 0 (both frameworks).
    The sum is ((x_t W_ih + b_ih) + h_{t-1} W_hh) + b_hh, PyTorch's order: at a
    pre-activation within rounding of the kink the order decides the side.
    """
    require(nonlinearity in ("tanh", "relu"), "nonlinearity", f"expected 'tanh' or 'relu', got {nonlinearity!r}")
    _check("rnn", x, h0, W_ih, W_hh, b_ih, b_hh)
    y, h_n, _, res = _scan("rnn", x, h0, None, W_ih, W_hh, b_ih, b_hh, nonlinearity=nonlinearity)
    return {"y": y, "h_n": h_n}, res


def rnn_vjp(res, g):
    return _scan_vjp(res, g["y"], g["h_n"])


def lstm(x, h0, c0, W_ih, W_hh, b_ih, b_hh, W_hr=None, *, proj_size=0):
    """LSTM, batch first, PyTorch's formulation; gates i, f, g, o (G = 4, in that
    order along the columns of W_ih, W_hh, b_ih, b_hh):

        a_t = x_t W_ih + b_ih + h_{t-1} W_hh + b_hh = [a_i | a_f | a_g | a_o]
        i = sigma(a_i),  f = sigma(a_f),  g = tanh(a_g),  o = sigma(a_o)
        c_t = f c_{t-1} + i g,   h_t = o tanh(c_t),   (h_{-1}, c_{-1}) = (h0, c0)
        y = (h_0 .. h_{T-1}) on axis 1,  h_n = h_{T-1},  c_n = c_{T-1}

    ``proj_size`` P > 0 (PyTorch's LSTM with projections, Sak et al. 2014): the
    state is projected, h_t = (o tanh(c_t)) W_hr with W_hr (H, P) (the transpose
    of ``weight_hr_l0``), so h0, h_n, y and the rows of W_hh have P features
    and c0, c_n keep H.

    Shapes: x (N, T, I), h0 (N, P), c0 (N, H), W_ih (I, 4H), W_hh (P, 4H), b_ih, b_hh
    (4H,) [W_hr (H, P)], P = H without a projection.
    Gradients, backwards in t, with dh_t = g_y[:, t] + [t = T-1] g_h_n + da_{t+1} W_hhᵀ,
    dm_t = dh_t W_hrᵀ (dm_t = dh_t without a projection; gW_hr = sum_t m_tᵀ dh_t for
    m_t = o tanh(c_t)) and dc_t = [t = T-1] g_c_n + dc_{t+1} f_{t+1} + dm_t o tanh'(c_t):
        da_o = dm_t tanh(c_t) o (1 - o),   da_i = dc_t g i (1 - i),
        da_f = dc_t c_{t-1} f (1 - f),      da_g = dc_t i (1 - g^2),
        da_i = da_h = [da_i | da_f | da_g | da_o];  gh0 = da_0 W_hhᵀ,  gc0 = dc_0 f_0.
    Smooth everywhere.
    """
    _check_proj(proj_size, W_hr)
    _check("lstm", x, h0, W_ih, W_hh, b_ih, b_hh, c0, W_hr)
    y, h_n, c_n, res = _scan("lstm", x, h0, c0, W_ih, W_hh, b_ih, b_hh, W_hr=W_hr)
    return {"y": y, "h_n": h_n, "c_n": c_n}, res


def lstm_vjp(res, g):
    return _scan_vjp(res, g["y"], g["h_n"], g["c_n"])


def gru(x, h0, W_ih, W_hh, b_ih, b_hh, *, reset_after=True):
    """GRU, batch first; gates r, z, n (G = 3, in that order along the columns of
    W_ih, W_hh, b_ih, b_hh). ``reset_after=True`` is PyTorch's formulation (and
    Keras' default): the reset gate multiplies the recurrent projection after its
    bias; ``reset_after=False`` (Keras' other one, the original GRU) multiplies
    h_{t-1} before the recurrent matmul:

        [u_r | u_z | u_n] = x_t W_ih + b_ih,   [w_r | w_z | w_n] = h_{t-1} W_hh + b_hh
        r = sigma(u_r + w_r),  z = sigma(u_z + w_z)
        reset_after:      n = tanh(u_n + r w_n)
        not reset_after:  n = tanh(u_n + (r h_{t-1}) W_hn + b_hn)    (W_hn, b_hn: block n of W_hh, b_hh)
        h_t = (1 - z) n + z h_{t-1},   h_{-1} = h0
        y = (h_0 .. h_{T-1}) on axis 1,  h_n = h_{T-1}

    Without reset_after, b_hn is added outside the reset, so only b_in + b_hn
    matters (Keras holds that sum as its one bias).
    Shapes: x (N, T, I), h0 (N, H), W_ih (I, 3H), W_hh (H, 3H), b_ih, b_hh (3H,).
    Gradients, backwards in t, with dh_t = g_y[:, t] + [t = T-1] g_h_n + (carry from t+1):
        dn = dh_t (1 - z) (1 - n^2),  dz = dh_t (h_{t-1} - n) z (1 - z)
        reset_after:  dr = dn w_n r (1 - r),  da_i = [dr | dz | dn],  da_h = [dr | dz | dn r],
                      carry to h_{t-1}: dh_t z + da_h W_hhᵀ
        otherwise:    dq = dn W_hnᵀ,  dr = dq h_{t-1} r (1 - r),  da_i = da_h = [dr | dz | dn],
                      gW_hn = sum_t (r h_{t-1})ᵀ dn (the other blocks: h_{t-1}ᵀ da_h),
                      carry to h_{t-1}: dh_t z + [dr | dz] W_hrzᵀ + dq r
        gh0 is the carry out of t = 0.
    Smooth everywhere.
    """
    require(reset_after in (True, False), "reset_after", f"expected True or False, got {reset_after!r}")
    _check("gru", x, h0, W_ih, W_hh, b_ih, b_hh)
    y, h_n, _, res = _scan("gru", x, h0, None, W_ih, W_hh, b_ih, b_hh, reset_after=reset_after)
    return {"y": y, "h_n": h_n}, res


def gru_vjp(res, g):
    return _scan_vjp(res, g["y"], g["h_n"])


# ---- stacks, directions, lengths ------------------------------------------------

def param_names(layers: int, directions: int) -> list[str]:
    """PyTorch's weight names without the ``weight_``/``bias_`` split: the suffix of
    layer l and direction d is ``_l{l}`` (+ ``_reverse`` for the reverse direction)."""
    return [f"_l{i}{'_reverse' if d else ''}" for i in range(layers) for d in range(directions)]


def _reversal(lengths, N, T):
    """The time index that reverses each sequence's first lengths[n] steps and leaves
    its padding in place (an involution): rev[n, t] = lengths[n] - 1 - t for t < lengths[n]."""
    t = np.arange(T)
    if lengths is None:
        return np.broadcast_to(T - 1 - t, (N, T))
    return np.where(t < lengths[:, None], lengths[:, None] - 1 - t, t)


def _gather(a, rev):
    return np.take_along_axis(a, rev[:, :, None], axis=1)


def check_lengths(lengths, x):
    """Valid steps (N, T) from lengths (N,) with 1 <= lengths <= T."""
    N, T = x.shape[:2]
    require(lengths.shape == (N,), "lengths", f"expected ({N},), one per sequence of x {x.shape}, got {lengths.shape}")
    require(np.issubdtype(lengths.dtype, np.integer), "lengths", f"expected integers, got {lengths.dtype}")
    require(bool(np.all((lengths >= 1) & (lengths <= T))), "lengths",
            f"expected values in [1, {T}] (T = x.shape[1]), got {lengths.tolist()}")
    return np.arange(T)[None, :] < lengths[:, None]


def _deep(kind, x, h0, c0, params, *, layers, directions, lengths=None, padded_output="zeros", proj_size=0,
          **cell):
    """L layers x D directions of one scan; states (L D, N, P) (c: (L D, N, H)), index l D + d."""
    require(isinstance(layers, (int, np.integer)) and not isinstance(layers, bool) and layers >= 1, "num_layers",
            f"expected an int >= 1, got {layers!r}")
    require(x.ndim == 3, "x", f"expected (N, T, I), got shape {x.shape}")
    N, T, _ = x.shape
    require(h0.ndim == 3 and h0.shape[:2] == (layers * directions, N), "h0",
            f"expected ({layers * directions}, {N}, H) (L D, N, H), got {h0.shape}")
    if c0 is not None:
        require(c0.ndim == 3 and c0.shape[:2] == h0.shape[:2], "c0",
                f"expected ({layers * directions}, {N}, H) (L D, N, H), got {c0.shape}")
    suffixes = param_names(layers, directions)
    names = ("W_ih", "W_hh", "b_ih", "b_hh") + (("W_hr",) if proj_size else ())
    wanted = {f"{p}{s}" for s in suffixes for p in names}
    require(set(params) == wanted, "params", f"expected {', '.join(sorted(wanted))}, got {', '.join(sorted(params))}")
    valid = None if lengths is None else check_lengths(lengths, x)
    rev = _reversal(lengths, N, T)
    inp, res, h_n, c_n = x, [], [], []
    for i in range(layers):
        ys = []
        for d in range(directions):
            k, s = i * directions + d, suffixes[i * directions + d]
            W_ih, W_hh, b_ih, b_hh = (params[p + s] for p in ("W_ih", "W_hh", "b_ih", "b_hh"))
            W_hr = params.get("W_hr" + s)
            _check_proj(proj_size, W_hr, s)
            _check(kind, inp, h0[k], W_ih, W_hh, b_ih, b_hh, None if c0 is None else c0[k], W_hr, suffix=s)
            y, h, c, r = _scan(kind, inp if d == 0 else _gather(inp, rev), h0[k], None if c0 is None else c0[k],
                               W_ih, W_hh, b_ih, b_hh, valid=valid, padded_output=padded_output, W_hr=W_hr, **cell)
            ys.append(y if d == 0 else _gather(y, rev))
            res.append(r)
            h_n.append(h)
            c_n.append(c)
        inp = ys[0] if directions == 1 else np.concatenate(ys, axis=2)
    out = {"y": inp, "h_n": np.stack(h_n)}
    if c0 is not None:
        out["c_n"] = np.stack(c_n)
    return out, (res, suffixes, layers, directions, rev, h0.shape[2])


def _deep_vjp(residuals, g):
    res, suffixes, layers, directions, rev, P = residuals
    gy, grads = g["y"], {}
    gh0 = np.empty_like(g["h_n"])
    gc0 = np.empty_like(g["c_n"]) if "c_n" in g else None
    for i in range(layers - 1, -1, -1):
        g_in = 0.0
        for d in range(directions):
            k, s = i * directions + d, suffixes[i * directions + d]
            gyd = gy[:, :, d * P:(d + 1) * P]
            gr = _scan_vjp(res[k], gyd if d == 0 else _gather(gyd, rev), g["h_n"][k],
                           None if gc0 is None else g["c_n"][k])
            g_in = g_in + (gr["x"] if d == 0 else _gather(gr["x"], rev))
            gh0[k] = gr["h0"]
            if gc0 is not None:
                gc0[k] = gr["c0"]
            grads.update({p + s: gr[p] for p in ("W_ih", "W_hh", "b_ih", "b_hh", "W_hr") if p in gr})
        gy = g_in
    grads.update(x=gy, h0=gh0)
    if gc0 is not None:
        grads["c0"] = gc0
    return grads


def _direction_count(bidirectional):
    require(bidirectional in (True, False), "bidirectional", f"expected True or False, got {bidirectional!r}")
    return 2 if bidirectional else 1


def _nonlinearity(nonlinearity):
    require(nonlinearity in ("tanh", "relu"), "nonlinearity", f"expected 'tanh' or 'relu', got {nonlinearity!r}")
    return {"nonlinearity": nonlinearity}


def stacked_rnn(x, h0, *, num_layers, bidirectional, nonlinearity, **params):
    """Stacked Elman RNN layers (PyTorch's ``nn.RNN(num_layers=L, bidirectional=B)``, dropout 0),
    as ``stacked_lstm`` with the cell of ``rnn`` (tanh or ReLU; ReLU'(0) = 0):
    h0, h_n (L D, N, H), W_ih_l0 (I, H), W_ih_l{l>0} (D H, H), W_hh_* (H, H), b_* (H,) -> y (N, T, D H)."""
    return _deep("rnn", x, h0, None, params, layers=num_layers, directions=_direction_count(bidirectional),
                 **_nonlinearity(nonlinearity))


def stacked_lstm(x, h0, c0, *, num_layers, bidirectional, proj_size=0, **params):
    """Stacked LSTM layers (PyTorch's ``nn.LSTM(num_layers=L, bidirectional=B, proj_size=P)``,
    dropout 0): layer 0 is ``lstm`` (or ``bidirectional_lstm`` with D = 2 directions) on x,
    layer l > 0 the same on layer l - 1's y (both directions' y concatenated, forward first).

    Shapes: x (N, T, I), h0 (L D, N, P), c0 (L D, N, H) (index l D + d; P = H without a
    projection), W_ih_l0 (I, 4H), W_ih_l{l>0} (D P, 4H), W_hh_* (P, 4H), b_ih_*, b_hh_* (4H,),
    W_hr_* (H, P) with proj_size P > 0; the reverse direction's weights end in ``_reverse``
    (``W_ih_l1_reverse``) -> y (N, T, D P) (the last layer's), h_n (L D, N, P), c_n (L D, N, H)
    (PyTorch's layout).
    Gradients: each layer's vjp from the last back; its gx is the cotangent of the layer
    below's y (split into the directions' halves), and every layer's h0, c0 their own.
    """
    return _deep("lstm", x, h0, c0, params, layers=num_layers, directions=_direction_count(bidirectional),
                 proj_size=proj_size)


def stacked_gru(x, h0, *, num_layers, bidirectional, **params):
    """Stacked GRU layers (``reset_after=True``), as ``stacked_lstm``: h0, h_n (L D, N, H),
    W_ih_l0 (I, 3H), W_ih_l{l>0} (D H, 3H), ... -> y (N, T, D H)."""
    return _deep("gru", x, h0, None, params, layers=num_layers, directions=_direction_count(bidirectional),
                 reset_after=True)


def bidirectional_rnn(x, h0, *, nonlinearity, **params):
    """A bidirectional Elman RNN layer (tanh or ReLU), as ``bidirectional_lstm``:
    y (N, T, 2H), h0, h_n (2, N, H), W_ih_l0, W_ih_l0_reverse (I, H), ..."""
    return _deep("rnn", x, h0, None, params, layers=1, directions=2, **_nonlinearity(nonlinearity))


def bidirectional_lstm(x, h0, c0, *, proj_size=0, **params):
    """A bidirectional LSTM layer (PyTorch's ``nn.LSTM(bidirectional=True)``, Keras'
    ``Bidirectional(LSTM, merge_mode="concat")``): the forward direction is ``lstm``
    on x; the reverse direction is ``lstm`` on x reversed in time (weights
    ``*_l0_reverse``), its y reversed back:

        y = [y_fwd | reverse_t(lstm(reverse_t(x))_y)]  (N, T, 2P),
        h_n (2, N, P), c_n (2, N, H): index 0 forward (after t = T-1), 1 reverse (after t = 0).

    Shapes: h0 (2, N, P), c0 (2, N, H); W_ih_l0, W_ih_l0_reverse (I, 4H); W_hh_* (P, 4H);
    b_* (4H,); W_hr_* (H, P) with proj_size P > 0 (P = H without).
    Gradients: each direction's vjp on its half of g_y (reversed for the reverse
    direction), the two gx summed.
    """
    return _deep("lstm", x, h0, c0, params, layers=1, directions=2, proj_size=proj_size)


def bidirectional_gru(x, h0, **params):
    """A bidirectional GRU layer (``reset_after=True``), as ``bidirectional_lstm``:
    y (N, T, 2H), h0, h_n (2, N, H), W_ih_l0, W_ih_l0_reverse (I, 3H), ..."""
    return _deep("gru", x, h0, None, params, layers=1, directions=2, reset_after=True)


stacked_rnn_vjp = stacked_lstm_vjp = stacked_gru_vjp = _deep_vjp
bidirectional_rnn_vjp = bidirectional_lstm_vjp = bidirectional_gru_vjp = _deep_vjp


# ---- variable-length sequences ----------------------------------------------------

PADDED_OUTPUTS = ("zeros", "repeat")
# How Keras is given the lengths: a boolean mask= argument, or a keras.layers.Masking
# layer in front (PyTorch has one way, packed sequences). The math is the same.
MASK_ROUTES = ("mask", "masking_layer")


def _check_route(route):
    require(route in MASK_ROUTES, "route", f"expected one of {MASK_ROUTES}, got {route!r}")


def _masked(kind, x, lengths, h0, c0, W_ih, W_hh, b_ih, b_hh, *, padded_output, return_sequences, route, W_hr=None,
            **cell):
    _check_route(route)
    require(padded_output in PADDED_OUTPUTS, "padded_output", f"expected 'zeros' or 'repeat', got {padded_output!r}")
    require(return_sequences in (True, False), "return_sequences", f"expected True or False, got {return_sequences!r}")
    _check(kind, x, h0, W_ih, W_hh, b_ih, b_hh, c0, W_hr)
    valid = check_lengths(lengths, x)
    y, h_n, c_n, res = _scan(kind, x, h0, c0, W_ih, W_hh, b_ih, b_hh, valid=valid, padded_output=padded_output,
                             W_hr=W_hr, **cell)
    out = {"y": y if return_sequences else y[:, -1], "h_n": h_n}
    if c_n is not None:
        out["c_n"] = c_n
    return out, (res, return_sequences, y.shape)


def _masked_vjp(residuals, g):
    res, return_sequences, shape = residuals
    gy = g["y"]
    if not return_sequences:
        gy = np.zeros(shape)
        gy[:, -1] = g["y"]
    return _scan_vjp(res, gy, g["h_n"], g.get("c_n"))


def masked_rnn(x, lengths, h0, W_ih, W_hh, b_ih, b_hh, *, nonlinearity, padded_output, return_sequences, route):
    """``rnn`` over a batch of variable-length sequences, as ``masked_lstm``."""
    require(nonlinearity in ("tanh", "relu"), "nonlinearity", f"expected 'tanh' or 'relu', got {nonlinearity!r}")
    return _masked("rnn", x, lengths, h0, None, W_ih, W_hh, b_ih, b_hh, nonlinearity=nonlinearity,
                   padded_output=padded_output, return_sequences=return_sequences, route=route)


def masked_lstm(x, lengths, h0, c0, W_ih, W_hh, b_ih, b_hh, W_hr=None, *, padded_output, return_sequences, route,
                proj_size=0):
    """``lstm`` over a batch of variable-length sequences: sequence n is x[n, :lengths[n]],
    padded to T (the values of x past its length are ignored).

    A padded step t >= lengths[n] leaves the state alone, (h_t, c_t) = (h_{t-1}, c_{t-1}),
    and receives no gradient: h_n, c_n are the states after step lengths[n] - 1 (what
    PyTorch's packed sequences and Keras' masks give). y at a padded step is
    ``padded_output``: "zeros" (pad_packed_sequence's padding_value=0, Keras'
    zero_output_for_mask=True) or "repeat" (the state, i.e. the last valid output
    repeated: Keras' default). ``return_sequences=False``: y is y[:, -1] (N, P), the
    last step's output (0 for a short sequence under "zeros", h_n under "repeat").
    Shapes: x (N, T, I), lengths (N,) integers in [1, T], the rest as ``lstm`` (a
    projection W_hr (H, P) with ``proj_size`` P > 0 too).
    Gradients: as ``lstm``, where a padded step passes dL/dh_t, dL/dc_t on to t - 1
    unchanged (plus g_y[:, t] under "repeat") and contributes nothing else; gx = 0 there.
    ``route``: how Keras is given the lengths (``MASK_ROUTES``); it changes nothing here.
    """
    _check_proj(proj_size, W_hr)
    return _masked("lstm", x, lengths, h0, c0, W_ih, W_hh, b_ih, b_hh, padded_output=padded_output,
                   return_sequences=return_sequences, route=route, W_hr=W_hr)


def masked_gru(x, lengths, h0, W_ih, W_hh, b_ih, b_hh, *, padded_output, return_sequences, route):
    """``gru`` (reset_after=True) over a batch of variable-length sequences, as ``masked_lstm``."""
    return _masked("gru", x, lengths, h0, None, W_ih, W_hh, b_ih, b_hh, padded_output=padded_output,
                   return_sequences=return_sequences, route=route, reset_after=True)


masked_rnn_vjp = masked_lstm_vjp = masked_gru_vjp = _masked_vjp


def masked_bidirectional_rnn(x, lengths, h0, *, route, nonlinearity, **params):
    """``bidirectional_rnn`` over a batch of variable-length sequences, as ``masked_bidirectional_lstm``."""
    _check_route(route)
    return _deep("rnn", x, h0, None, params, layers=1, directions=2, lengths=lengths, **_nonlinearity(nonlinearity))


def masked_bidirectional_lstm(x, lengths, h0, c0, *, route, proj_size=0, **params):
    """``bidirectional_lstm`` over a batch of variable-length sequences: the reverse
    direction runs on each sequence's valid part reversed, x[n, lengths[n]-1 .. 0]
    (PyTorch's packed sequences; Keras' go_backwards over a mask, whose padded steps
    then come first and keep the initial state), and its y is reversed back in place.
    Padded steps keep the state, get no gradient, and y is 0 there in both halves
    (pad_packed_sequence; keras Bidirectional forces zero_output_for_mask when it
    returns sequences). h_n, c_n (2, N, H): forward after step lengths[n] - 1, reverse
    after step 0. Shapes as ``bidirectional_lstm`` plus lengths (N,) in [1, T]; ``route`` as
    ``masked_lstm``.
    """
    _check_route(route)
    return _deep("lstm", x, h0, c0, params, layers=1, directions=2, lengths=lengths, proj_size=proj_size)


def masked_bidirectional_gru(x, lengths, h0, *, route, **params):
    """``bidirectional_gru`` over a batch of variable-length sequences, as ``masked_bidirectional_lstm``."""
    _check_route(route)
    return _deep("gru", x, h0, None, params, layers=1, directions=2, lengths=lengths, reset_after=True)


def masked_stacked_rnn(x, lengths, h0, *, route, num_layers, bidirectional, nonlinearity, **params):
    """``stacked_rnn`` over a batch of variable-length sequences, as ``masked_stacked_lstm``."""
    _check_route(route)
    return _deep("rnn", x, h0, None, params, layers=num_layers, directions=_direction_count(bidirectional),
                 lengths=lengths, **_nonlinearity(nonlinearity))


def masked_stacked_lstm(x, lengths, h0, c0, *, route, num_layers, bidirectional, proj_size=0, **params):
    """``stacked_lstm`` over a batch of variable-length sequences (PyTorch: the packed
    sequence through ``nn.LSTM(num_layers=L, bidirectional=B)``; Keras: each layer given
    the mask): every layer, each direction as in ``masked_bidirectional_lstm``, keeps its
    state at a padded step and passes it no gradient; y is 0 there (so layer l + 1 reads
    zeros there, which it skips). h_n, c_n (L D, N, .): each sequence's state after its
    last valid step (forward) or after step 0 (reverse). Shapes as ``stacked_lstm`` plus
    lengths (N,) in [1, T]; ``route`` as ``masked_lstm``.
    """
    _check_route(route)
    return _deep("lstm", x, h0, c0, params, layers=num_layers, directions=_direction_count(bidirectional),
                 lengths=lengths, proj_size=proj_size)


def masked_stacked_gru(x, lengths, h0, *, route, num_layers, bidirectional, **params):
    """``stacked_gru`` over a batch of variable-length sequences, as ``masked_stacked_lstm``."""
    _check_route(route)
    return _deep("gru", x, h0, None, params, layers=num_layers, directions=_direction_count(bidirectional),
                 lengths=lengths, reset_after=True)


masked_bidirectional_rnn_vjp = masked_bidirectional_lstm_vjp = masked_bidirectional_gru_vjp = _deep_vjp
masked_stacked_rnn_vjp = masked_stacked_lstm_vjp = masked_stacked_gru_vjp = _deep_vjp


# ---- catalogue entries --------------------------------------------------------

register = registrar("recurrent")

# One layer, one direction, batch first; weights (in, G H) in PyTorch's gate order
# (see reference/recurrent.py). Inputs reach +-3 and weights +-2, so with I = 4
# the gates saturate now and then (sigma(30) is exactly 1 in float32); zero
# initial states come from the 0.0 edge. T = 1 (one step) and N = 1 are drawn, and
# now and then T = 50, where the gradient reaching early steps shrinks or grows
# (``flow``: its norm per step is compared too).

RECURRENT_DIMS = {"N": Int(1, 3, edges=(0,)), "T": Int(1, 4, edges=(50,)), "I": Int(1, 4), "H": Int(1, 4, like="I")}
RECURRENT_X = Real(-3.0, 3.0, edges=(0.0, 3.0, -3.0))
RECURRENT_STATE = Real(-2.0, 2.0, edges=(0.0,))
RECURRENT_W = Real(-2.0, 2.0, edges=(0.0, 2.0, -2.0))
RECURRENT_B = Real(-3.0, 3.0, edges=(0.0, 3.0, -3.0))


def _through_time(forward, vjp):
    """What every layer through time declares: the per-step gradient norms of x
    (``flow``) and the condition number measured by perturbation."""
    return {"flow": "x", "condition": through_time(forward, vjp), "empty": True}


# Through time: one step, a long sequence (where gradients vanish or explode), a
# loss on the last state only (the gradient reaches early steps through time alone).
ONE_STEP = Edge("one_step", lambda c: c.arrays["x"].shape[1] == 1, {"T": 1})
LONG = Edge("long_sequence", lambda c: c.arrays["x"].shape[1] >= 50, {"T": 50})
LAST_STATE_ONLY = Edge("loss_on_last_state_only", lambda c: not np.any(c.cotangents["y"])
                       and any(np.any(g) for n, g in c.cotangents.items() if n != "y"))
TIME = (ONE_STEP, batch_of(1), batch_of(0), LAST_STATE_ONLY, SUBNORMAL)


# An LSTM may project its state (PyTorch's proj_size, P < H): drawn as a size P
# and used when it is below H.
PROJ_SIZE = Drawn(int, lambda d: Choice(0, d.P) if d.P < d.H else Choice(0))
PROJECTED = Edge("projected", lambda c: c.attrs["proj_size"] > 0, {"H": Choice(2, 3), "P": 1, "proj_size": 1})
RELU = attr_is("nonlinearity", "relu")


def _h(d, a):
    """The size of the state h: the projection's, else H."""
    return a.get("proj_size", 0) or d.H


def _recurrent_arrays(gates, states=("h0",)):
    lstm = "c0" in states
    arrays = {
        "x": Array(S("N", "T", "I"), RECURRENT_X),
        "h0": Array(lambda d, a: (d.N, _h(d, a)), RECURRENT_STATE),
        **({"c0": Array(S("N", "H"), RECURRENT_STATE)} if lstm else {}),
        "W_ih": Array(lambda d, a: (d.I, gates * d.H), RECURRENT_W, param=True),
        "W_hh": Array(lambda d, a: (_h(d, a), gates * d.H), RECURRENT_W, param=True),
        "b_ih": Array(lambda d, a: (gates * d.H,), RECURRENT_B, param=True),
        "b_hh": Array(lambda d, a: (gates * d.H,), RECURRENT_B, param=True),
    }
    if lstm:
        arrays["W_hr"] = Array(lambda d, a: (d.H, a["proj_size"]), RECURRENT_W, param=True,
                               when=lambda a: a["proj_size"] > 0)
    return arrays


register(Layer(
    "rnn", rnn, rnn_vjp, dims=RECURRENT_DIMS, outputs=("y", "h_n"),
    **_through_time(rnn, rnn_vjp), edges=(*TIME, LONG, RELU),
    attrs={"nonlinearity": Choice("tanh", "relu")},
    arrays=_recurrent_arrays(1),
))

register(Layer(
    "lstm", lstm, lstm_vjp, dims={**RECURRENT_DIMS, "P": Int(1, 2)}, outputs=("y", "h_n", "c_n"),
    **_through_time(lstm, lstm_vjp), edges=(*TIME, LONG, PROJECTED),
    attrs={"proj_size": PROJ_SIZE},
    arrays=_recurrent_arrays(4, ("h0", "c0")),
))

register(Layer(
    "gru", gru, gru_vjp, dims=RECURRENT_DIMS, outputs=("y", "h_n"),
    **_through_time(gru, gru_vjp), edges=(*TIME, LONG, attr_is("reset_after", False)),
    attrs={"reset_after": Choice(True, False)},
    arrays=_recurrent_arrays(3),
))

# Stacks and directions: PyTorch's weight names (W_ih_l1, W_ih_l0_reverse, ...) and
# state layout (L D, N, H), index l D + d; smaller sizes (the cost grows with L D).
# The names say the structure: ``stacked_*`` are L = 2 or 3 layers, one direction or
# both (``bidirectional``, PyTorch's argument); ``bidirectional_*`` one layer, both
# directions; ``masked_*`` take lengths.
DEEP_DIMS = {"N": Int(1, 3, edges=(0,)), "T": Int(1, 4), "I": Int(1, 3), "H": Int(1, 3, like="I")}
MAX_LAYERS = 3
NUM_LAYERS = Choice(2, 3, default=2)  # cases saved before num_layers existed were two layers
BIDIRECTIONAL = Choice(False, True, default=False)


def _layers_directions(a, layers, directions):
    """(L, D) of a case: fixed by the layer, or its attributes num_layers, bidirectional."""
    return (a["num_layers"] if layers is None else layers,
            (2 if a["bidirectional"] else 1) if directions is None else directions)


def _deep_arrays(gates, layers=None, directions=None, states=("h0",)):
    """x, the states (L D, N, .) and each layer x direction's weights, present as the case's
    (L, D) say (``layers``/``directions`` None: from the attributes num_layers/bidirectional)."""
    lstm = "c0" in states

    def LD(a):
        return _layers_directions(a, layers, directions)

    arrays = {"x": Array(S("N", "T", "I"), RECURRENT_X),
              "h0": Array(lambda d, a: (LD(a)[0] * LD(a)[1], d.N, _h(d, a)), RECURRENT_STATE)}
    if lstm:
        arrays["c0"] = Array(lambda d, a: (LD(a)[0] * LD(a)[1], d.N, d.H), RECURRENT_STATE)
    for i in range(layers or MAX_LAYERS):
        for r in range(directions or 2):
            suffix = param_names(i + 1, 2)[2 * i + r]
            fixed = layers is not None and directions is not None

            def when(a, i=i, r=r):
                L, D = LD(a)
                return i < L and r < D

            def w_ih(d, a, i=i):
                return (d.I if i == 0 else LD(a)[1] * _h(d, a), gates * d.H)

            arrays.update({
                f"W_ih{suffix}": Array(w_ih, RECURRENT_W, param=True, when=None if fixed else when),
                f"W_hh{suffix}": Array(lambda d, a: (_h(d, a), gates * d.H), RECURRENT_W, param=True,
                                       when=None if fixed else when),
                f"b_ih{suffix}": Array(lambda d, a: (gates * d.H,), RECURRENT_B, param=True,
                                       when=None if fixed else when),
                f"b_hh{suffix}": Array(lambda d, a: (gates * d.H,), RECURRENT_B, param=True,
                                       when=None if fixed else when),
            })
            if lstm:
                arrays[f"W_hr{suffix}"] = Array(lambda d, a: (d.H, a["proj_size"]), RECURRENT_W, param=True,
                                                when=lambda a, when=when: a["proj_size"] > 0 and when(a))
    return arrays


STACKED = {"num_layers": NUM_LAYERS, "bidirectional": BIDIRECTIONAL}
STACK_EDGES = (attr_is("num_layers", 3), attr_is("bidirectional", True),
               Edge("three_layers_bidirectional", lambda c: c.attrs["num_layers"] == 3 and c.attrs["bidirectional"],
                    {"num_layers": 3, "bidirectional": True}))
LSTM_DEEP_DIMS = {**DEEP_DIMS, "P": Int(1, 2)}
# Stacks: up to 3 layers x 2 directions of scans, so up to 3 steps (Keras' eager loop is the cost).
STACK_DIMS, LSTM_STACK_DIMS = ({**dims, "T": Int(1, 3)} for dims in (DEEP_DIMS, LSTM_DEEP_DIMS))
# name, forward, gates, (L, D) fixed or None (from the attributes), the kind's own attributes and edges
_DEEP = (
    ("stacked_rnn", stacked_rnn, 1, None, None, {"nonlinearity": Choice("tanh", "relu")}, (RELU,)),
    ("stacked_lstm", stacked_lstm, 4, None, None, {"proj_size": PROJ_SIZE}, (PROJECTED,)),
    ("stacked_gru", stacked_gru, 3, None, None, {}, ()),
    ("bidirectional_rnn", bidirectional_rnn, 1, 1, 2, {"nonlinearity": Choice("tanh", "relu")}, (RELU,)),
    ("bidirectional_lstm", bidirectional_lstm, 4, 1, 2, {"proj_size": PROJ_SIZE}, (PROJECTED,)),
    ("bidirectional_gru", bidirectional_gru, 3, 1, 2, {}, ()),
)
for _name, _fwd, _gates, _layers, _directions, _attrs, _edges in _DEEP:
    _lstm = _gates == 4
    _dims = (LSTM_DEEP_DIMS if _lstm else DEEP_DIMS) if _layers else (LSTM_STACK_DIMS if _lstm else STACK_DIMS)
    register(Layer(
        _name, _fwd, _deep_vjp, dims=_dims,
        outputs=("y", "h_n", "c_n") if _lstm else ("y", "h_n"),
        **_through_time(_fwd, _deep_vjp), edges=(*TIME, *(STACK_EDGES if _layers is None else ()), *_edges),
        attrs={**(STACKED if _layers is None else {}), **_attrs},
        arrays=_deep_arrays(_gates, _layers, _directions, ("h0", "c0") if _lstm else ("h0",)),
    ))

# Variable-length sequences: lengths in [1, T] (all full and all 1 drawn on purpose);
# what y holds at a padded step, whether y is the whole sequence, and how Keras is
# given the lengths are attributes (cases saved before ``route`` existed used mask=
# or a Masking layer by a hash of x; they replay through mask=).
ROUTE = Choice(*MASK_ROUTES, default="mask")
MASKED_ATTRS = {"padded_output": Choice(*PADDED_OUTPUTS), "return_sequences": Choice(True, False), "route": ROUTE}


def _lengths(test):
    return lambda c: c.arrays["lengths"].size > 0 and bool(test(c.arrays["lengths"], c.arrays["x"].shape[1]))


# Variable lengths: all full, all of one step in a longer batch, mixed; a Masking layer.
LENGTH_EDGES = (Edge("all_full", _lengths(lambda n, T: np.all(n == T))),
                Edge("all_one_step", _lengths(lambda n, T: T > 1 and np.all(n == 1))),
                Edge("mixed_lengths", _lengths(lambda n, T: len(np.unique(n)) > 1)),
                attr_is("route", "masking_layer"), batch_of(0), SUBNORMAL)
MASKED_EDGES = (*LENGTH_EDGES, attr_is("padded_output", "repeat"), attr_is("return_sequences", False))


def _masked_arrays(gates, states=("h0",)):
    arrays = _recurrent_arrays(gates, states)
    return {"x": arrays.pop("x"), "lengths": Array(S("N"), Lengths("T")), **arrays}


register(Layer(
    "masked_rnn", masked_rnn, masked_rnn_vjp, dims=DEEP_DIMS, outputs=("y", "h_n"),
    **_through_time(masked_rnn, masked_rnn_vjp), edges=(*MASKED_EDGES, RELU),
    attrs={"nonlinearity": Choice("tanh", "relu"), **MASKED_ATTRS}, arrays=_masked_arrays(1),
))

register(Layer(
    "masked_lstm", masked_lstm, masked_lstm_vjp, dims=LSTM_DEEP_DIMS, outputs=("y", "h_n", "c_n"),
    **_through_time(masked_lstm, masked_lstm_vjp), edges=(*MASKED_EDGES, PROJECTED),
    attrs={**MASKED_ATTRS, "proj_size": PROJ_SIZE}, arrays=_masked_arrays(4, ("h0", "c0")),
))

register(Layer(
    "masked_gru", masked_gru, masked_gru_vjp, dims=DEEP_DIMS, outputs=("y", "h_n"),
    **_through_time(masked_gru, masked_gru_vjp), edges=MASKED_EDGES,
    attrs=MASKED_ATTRS, arrays=_masked_arrays(3),
))

for _name, _fwd, _gates, _layers, _directions, _attrs, _edges in (
        ("masked_bidirectional_rnn", masked_bidirectional_rnn, *_DEEP[3][2:]),
        ("masked_bidirectional_lstm", masked_bidirectional_lstm, *_DEEP[4][2:]),
        ("masked_bidirectional_gru", masked_bidirectional_gru, *_DEEP[5][2:]),
        ("masked_stacked_rnn", masked_stacked_rnn, *_DEEP[0][2:]),
        ("masked_stacked_lstm", masked_stacked_lstm, *_DEEP[1][2:]),
        ("masked_stacked_gru", masked_stacked_gru, *_DEEP[2][2:])):
    _lstm = _gates == 4
    _arrays = _deep_arrays(_gates, _layers, _directions, ("h0", "c0") if _lstm else ("h0",))
    _dims = (LSTM_DEEP_DIMS if _lstm else DEEP_DIMS) if _layers else (LSTM_STACK_DIMS if _lstm else STACK_DIMS)
    register(Layer(
        _name, _fwd, _deep_vjp, dims=_dims,
        outputs=("y", "h_n", "c_n") if _lstm else ("y", "h_n"),
        **_through_time(_fwd, _deep_vjp), attrs={"route": ROUTE, **(STACKED if _layers is None else {}), **_attrs},
        edges=(*LENGTH_EDGES, *(STACK_EDGES if _layers is None else ()), *_edges),
        arrays={"x": _arrays.pop("x"), "lengths": Array(S("N"), Lengths("T")), **_arrays},
    ))
