"""The oracle's answer for NaN and Inf inputs (``Layer.nonfinite``): its formula
in IEEE arithmetic, where an element's formula reads the cells of its own window,
row or selected term and no others. A NaN outside them reaches it neither as
0 * NaN from a product written as a matrix (adaptive pooling), nor from a term
of weight 0 (an ignored label), nor from padding. Inside them IEEE rules hold
even where the math cancels (softmax over one element of NaN is NaN, as in both
frameworks). Every layer's answers are compared with both frameworks' by the
suite; these pin the rules the docstrings state.
"""

import numpy as np
from gradparity.reference import Case, evaluate

def _max_pool(x, out=(1, 1), **conv):
    attrs = dict(batched=True, kernel_h=2, kernel_w=2, stride_h=2, stride_w=2, dilation_h=1, dilation_w=1,
                 padding="valid",
                 pad_h=0, pad_w=0, ceil_mode=False)
    attrs.update({k: conv.pop(k) for k in list(conv) if k in attrs})
    x = np.asarray(x, dtype=np.float64)[None, None]
    out = evaluate(Case("max_pool2d", "float64", attrs, {"x": x}, {"y": np.ones((1, 1) + out)}), conv).outputs
    return out["out"]["y"].ravel(), out["grad"]["x"][0, 0]


def test_a_max_pool_window_holding_nan_is_nan_and_routes_to_the_nan_the_convention_names():
    y, first = _max_pool([[1.0, np.nan], [np.nan, 2.0]])
    assert np.isnan(y).all()
    assert first.tolist() == [[0, 1], [0, 0]]
    _, last = _max_pool([[1.0, np.nan], [np.nan, 2.0]], nan_route="last")
    assert last.tolist() == [[0, 0], [1, 0]]


def test_max_pool_padding_never_wins_even_against_minus_inf():
    y, g = _max_pool([[-np.inf, -np.inf], [-np.inf, -np.inf]], out=(2, 2), padding="explicit", pad_h=1, pad_w=1)
    assert y.tolist() == [-np.inf] * 4
    assert g.tolist() == [[1, 1], [1, 1]]  # each corner window's one cell of x takes its gradient


def test_adaptive_avg_pool_nan_reaches_only_the_windows_that_hold_it():
    x = np.arange(16.0).reshape(1, 1, 4, 4)
    x[0, 0, 0, 0] = np.nan
    case = Case("adaptive_avg_pool2d", "float64", {"batched": True, "output_h": 3, "output_w": 3}, {"x": x},
                {"y": np.ones((1, 1, 3, 3))})
    y = evaluate(case).outputs["out"]["y"][0, 0]
    assert np.isnan(y).tolist() == [[True, False, False], [False, False, False], [False, False, False]]
    assert y[1, 1] == np.mean(x[0, 0, 1:3, 1:3])


def test_cross_entropy_with_a_minus_inf_logit_of_another_class_stays_finite():
    logits = np.array([[0.5, -np.inf, 1.0], [np.nan, np.nan, np.nan]])
    case = Case("cross_entropy", "float64",
                {"label_smoothing": 0.0, "reduction": "none", "target_type": "indices", "ignore_index": 2},
                {"logits": logits, "labels": np.array([0, 2])}, {"loss": np.ones(2)})
    out = evaluate(case).outputs
    p0 = np.exp(0.5) / (np.exp(0.5) + np.exp(1.0))
    np.testing.assert_allclose(out["out"]["loss"], [-np.log(p0), 0.0])  # the ignored row is 0, NaN or not
    np.testing.assert_allclose(out["grad"]["logits"], [[p0 - 1, 0.0, 1 - p0], [0.0, 0.0, 0.0]])
