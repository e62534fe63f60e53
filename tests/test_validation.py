"""Bad input is rejected with a ValueError naming the field, before any framework runs."""

import numpy as np
import pytest

from gradparity.reference import Case, validate
from gradparity.reports.compare import check


class Untouchable:
    """An adapter that fails the test if it is ever asked to run."""

    name = "untouchable"

    def version(self):
        return "0"

    def convention(self, layer):
        return None

    def run(self, case):
        raise AssertionError("the framework ran on an invalid case")


def dense_case(**overrides):
    arrays = {"x": np.ones((2, 3)), "W": np.ones((3, 4)), "b": np.zeros(4)}
    fields = {"layer": "dense", "dtype": "float64", "attrs": {}, "arrays": arrays, "g": np.ones((2, 4)) * 0.5}
    fields.update(overrides)
    return Case(**fields)


def ce_case(labels):
    return Case("cross_entropy", "float64", {"label_smoothing": 0.0, "reduction": "mean"},
                {"logits": np.zeros((2, 3)), "labels": np.asarray(labels)}, np.array(1.0))


@pytest.mark.parametrize("case, field", [
    (dense_case(layer="dense3"), "layer"),
    (dense_case(dtype="float16"), "dtype"),
    (dense_case(arrays={"x": np.ones((2, 3)), "W": np.ones((4, 4))}), "W"),
    (dense_case(arrays={"x": np.ones((2, 3)), "W": np.ones((3, 4)), "b": np.zeros(5)}), "b"),
    (dense_case(arrays={"x": np.ones((2, 3))}), "W"),
    (dense_case(arrays={"x": np.ones((2, 3)), "W": np.ones((3, 4)), "bias": np.zeros(4)}), "bias"),
    (dense_case(arrays={"x": np.ones((2, 3), np.float32), "W": np.ones((3, 4))}), "x"),
    (dense_case(arrays={"x": np.full((2, 3), np.nan), "W": np.ones((3, 4))}), "x"),
    (dense_case(attrs={"stride": 2}), "attrs"),
    (dense_case(g=np.ones((4, 2))), "g"),
    (ce_case([0, 3]), "labels"),
    (ce_case([0, -1]), "labels"),
    (ce_case([0.0, 1.0]), "labels"),
    (ce_case([0, 1, 2]), "labels"),
    (Case("huber", "float64", {"delta": -1.0}, {"pred": np.ones(3), "target": np.ones(3)}, np.array(1.0)), "delta"),
    (Case("softmax", "float64", {"axis": 2}, {"x": np.ones((2, 2))}, np.ones((2, 2))), "axis"),
    (Case("huber", "float64", {}, {"pred": np.ones(3), "target": np.ones(3)}, np.array(1.0)), "attrs"),
])
def test_invalid_case_names_the_field_before_any_framework_runs(case, field):
    with pytest.raises(ValueError, match=rf"^{field}: "):
        validate(case)
    with pytest.raises(ValueError, match=rf"^{field}: "):
        check(case, Untouchable())


def test_valid_case_passes_validation():
    assert validate(dense_case()).name == "dense"
