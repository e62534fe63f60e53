"""Bad input is rejected with a ValueError naming the field, before any framework runs."""

import re

import numpy as np
import pytest

from gradparity.reference import Case, Oracle, validate
from gradparity.reports.compare import check


class Untouchable:
    """A runner that fails the test if it is ever asked to run."""

    name = "untouchable"

    def version(self):
        return "0"

    def convention(self, layer):
        return None

    def run(self, case):
        raise AssertionError("the framework ran on an invalid case")


def dense_case(**overrides):
    arrays = {"x": np.ones((2, 3)), "W": np.ones((3, 4)), "b": np.zeros(4)}
    fields = {"layer": "dense", "dtype": "float64", "attrs": {}, "arrays": arrays,
              "cotangents": {"y": np.ones((2, 4)) * 0.5}}
    fields.update(overrides)
    return Case(**fields)


def ce_case(labels):
    return Case("cross_entropy", "float64", {"label_smoothing": 0.0, "reduction": "mean", "target_type": "indices",
                                             "ignore_index": -100},
                {"logits": np.zeros((2, 3)), "labels": np.asarray(labels)}, {"loss": np.array(1.0)})


def conv_case(**attrs):
    base = {"batched": True, "stride_h": 1, "stride_w": 1, "dilation_h": 1, "dilation_w": 1, "groups": 1, "padding": "valid",
            "pad_top": 0, "pad_bottom": 0, "pad_left": 0, "pad_right": 0}
    return Case("conv2d", "float64", {**base, **attrs}, {"x": np.ones((1, 1, 3, 3)), "W": np.ones((1, 1, 2, 2))},
                {"y": np.ones((1, 1, 2, 2))})


def softmax_case(axis, x=np.ones((2, 2))):
    return Case("softmax", "float64", {"axis": axis}, {"x": x}, {"y": np.ones(x.shape)})


@pytest.mark.parametrize("case, field", [
    (dense_case(layer="dense3"), "layer"),
    (dense_case(dtype="float16"), "dtype"),
    (dense_case(arrays={"x": np.ones((2, 3)), "W": np.ones((4, 4))}), "W"),
    (dense_case(arrays={"x": np.ones((2, 3)), "W": np.ones((3, 4)), "b": np.zeros(5)}), "b"),
    (dense_case(arrays={"x": np.ones((2, 3))}), "W"),
    (dense_case(arrays={"x": np.ones((2, 3)), "W": np.ones((3, 4)), "bias": np.zeros(4)}), "bias"),
    (dense_case(arrays={"x": np.ones((2, 3), np.float32), "W": np.ones((3, 4))}), "x"),
    # NaN and Inf are meaningful in dense's input x (Layer.nonfinite), never in a parameter
    (dense_case(arrays={"x": np.ones((2, 3)), "W": np.full((3, 4), np.inf)}), "W"),
    (dense_case(attrs={"stride": 2}), "attrs"),
    (dense_case(cotangents={"y": np.ones((4, 2))}), "cotangents[y]"),
    # a NaN or Inf cotangent would let every gradient pass vacuously
    (dense_case(cotangents={"y": np.full((2, 4), np.nan)}), "cotangents[y]"),
    (dense_case(cotangents={"y": np.full((2, 4), np.inf)}), "cotangents[y]"),
    (dense_case(cotangents={"y": np.ones((2, 4), np.float32)}), "cotangents[y]"),
    (dense_case(cotangents={"y": [[0.5] * 4] * 2}), "cotangents[y]"),
    (dense_case(cotangents={}), "cotangents"),
    (dense_case(cotangents={"out": np.ones((2, 4))}), "cotangents"),
    (dense_case(cotangents=np.ones((2, 4))), "cotangents"),
    # an empty array for a layer that does not declare it takes zero-size arrays (Layer.empty)
    (dense_case(arrays={"x": np.ones((2, 3)), "W": np.ones((0, 4))}, cotangents={"y": np.ones((2, 4))}), "W"),
    (Case("dropout", "float64", {"p": 0.0}, {"x": np.ones((0, 3)), "mask": np.ones((0, 3))}, {"y": np.ones((0, 3))}),
     "x"),
    (ce_case([0, 3]), "labels"),
    (ce_case([0, -1]), "labels"),
    (ce_case([0.0, 1.0]), "labels"),
    (ce_case([0, 1, 2]), "labels"),
    (Case("huber", "float64", {"delta": -1.0, "reduction": "mean"}, {"pred": np.ones(3), "target": np.ones(3)},
          {"loss": np.array(1.0)}), "delta"),
    (Case("huber", "float64", {}, {"pred": np.ones(3), "target": np.ones(3)}, {"loss": np.array(1.0)}), "attrs"),
    (softmax_case(2), "axis"),
    # wrong types: a bool where an int belongs, a string where an int belongs
    (conv_case(stride_h=True), "stride_h"),
    (conv_case(batched=1), "batched"),
    # batched=False takes x without its batch axis: (C, H, W), not (N, C, H, W)
    (conv_case(batched=False), "x"),
    (conv_case(stride_w=1.0), "stride_w"),
    (conv_case(padding="SAME"), "padding"),
    (softmax_case("1"), "axis"),
    (Case("huber", "float64", {"delta": "1", "reduction": "mean"}, {"pred": np.ones(3), "target": np.ones(3)},
          {"loss": np.array(1.0)}), "delta"),
])
def test_invalid_case_names_the_field_before_any_framework_runs(case, field):
    with pytest.raises(ValueError, match=rf"^{re.escape(field)}: "):
        check(case, Oracle(), Untouchable())


def test_validation_alone_runs_nothing_and_names_the_field():
    with pytest.raises(ValueError, match=r"^stride_h: expected an int, got bool True"):
        validate(conv_case(stride_h=True))


def test_nonfinite_values_are_accepted_only_where_the_layer_declares_them():
    nan_x = dense_case(arrays={"x": np.array([[np.nan, 1.0, 2.0], [0.0, -np.inf, 1.0]]), "W": np.ones((3, 4))})
    assert validate(nan_x).name == "dense"
    with pytest.raises(ValueError, match=r"^W: contains NaN or Inf \(the layer does not declare"):
        validate(dense_case(arrays={"x": np.ones((2, 3)), "W": np.full((3, 4), np.nan)}))


def test_valid_case_passes_validation():
    assert validate(dense_case()).name == "dense"


def test_an_empty_array_is_refused_only_where_the_layer_does_not_take_one():
    with pytest.raises(ValueError, match=r"^x: is empty \(shape \(0, 3\)\); dropout does not take zero-size arrays"):
        validate(Case("dropout", "float64", {"p": 0.0}, {"x": np.ones((0, 3)), "mask": np.ones((0, 3))},
                      {"y": np.ones((0, 3))}))
    empty = dense_case(arrays={"x": np.ones((0, 3)), "W": np.ones((3, 4))}, cotangents={"y": np.ones((0, 4))})
    assert validate(empty).name == "dense"  # a batch of 0: dense declares empty=True
    grads = Oracle().run(empty)["grad"]
    assert grads["x"].shape == (0, 3) and np.array_equal(grads["W"], np.zeros((3, 4)))
