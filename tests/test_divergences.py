"""Known divergences say how far they may go, and explain nothing further.

Every entry of the table declares a bound, an outcome (the positions it may
differ at, and what it returns there) or the error it raises, or is UNBOUNDED
with a reason; a case inside a divergence that also carries an unrelated error
still fails."""

import numpy as np
import pytest

from gradparity.reference import GRAD, OUT, Case, Oracle
from gradparity.reports import conditions as c
from gradparity.reports.compare import check
from gradparity.reports.divergences import (KNOWN_DIVERGENCES, UNBOUNDED, Divergence, divergence_notes, together,
                                           undeclared)

ALWAYS = {("relu",): c.always}


class Framework:
    """A fake framework under a real one's name (so that framework's divergences apply), answering
    ``answer(case)``."""

    convention = staticmethod(lambda layer: None)

    def __init__(self, name, answer):
        self.name, self.answer = name, answer

    def version(self):
        return "1"

    def run(self, case):
        return self.answer(case)


def statuses(rows):
    return {r["name"]: r["status"] for r in rows}


# ---- the registry

def test_every_divergence_declares_how_far_it_may_go():
    assert undeclared() == []


def test_an_entry_that_declares_nothing_or_is_unbounded_without_a_reason_is_caught():
    found = undeclared([Divergence("says-nothing", ALWAYS), Divergence("no-reason-given", ALWAYS, bound=UNBOUNDED),
                        Divergence("bounded", ALWAYS, bound=1e-7), Divergence("refuses", ALWAYS, raises="no"),
                        Divergence("placed", ALWAYS, outcome=c.nan_where_finite)])
    assert [f.split(":")[0] for f in found] == ["says-nothing", "no-reason-given"]


def test_an_entry_that_declares_nothing_explains_nothing():
    row = {"status": "fail", "max_rel_err": 1e-20, "atol": 1e-10, "scale": 1.0, "nonfinite": "", "detail": ""}
    assert not Divergence("says-nothing", ALWAYS).explains(row, np.ones(2), np.ones(2) + 1e-9)
    assert Divergence("unbounded", ALWAYS, bound=UNBOUNDED).explains(row, np.ones(2), np.ones(2) + 1e300)


def test_the_bound_column_says_it_in_words():
    words = {n["key"]: n["bound"] for n in divergence_notes()}
    assert words["torch-mha-masked-row-nan"] == "NaN where the exact value is finite; elsewhere within tolerance"
    assert words["tf-gelu-float32-constants"] == "max_rel_err <= 1e-07"
    assert words["torch-pack-empty-batch"].startswith("an error matching ")
    assert all(w.startswith("any error (unbounded: ") for w in (words[d.key] for d in KNOWN_DIVERGENCES
                                                                  if d.bound == UNBOUNDED))
    assert "nothing declared" not in " ".join(words.values())


# ---- a bound, an outcome and an error message each bite

def test_a_bound_explains_up_to_itself_and_not_beyond():
    div = Divergence("k", ALWAYS, bound=1e-6)
    exact = np.array([1.0, 2.0])
    row = {"status": "fail", "atol": 1e-12, "scale": 2.0}
    assert div.explains(row, exact, exact + [0.0, 1.9e-6])
    assert not div.explains(row, exact, exact + [0.0, 2.1e-6])
    assert not div.explains(row, exact, np.array([np.nan, 2.0]))  # a NaN it does not declare


def test_an_outcome_explains_only_its_own_positions():
    div = Divergence("k", ALWAYS, outcome=c.zero_where_nan)
    row = {"status": "fail", "atol": 1e-10, "scale": 1.0}
    exact = np.array([np.nan, 1.0])
    assert div.explains(row, exact, np.array([0.0, 1.0]))
    assert not div.explains(row, exact, np.array([0.0, 1.1]))  # a finite position off too: still a failure
    assert not div.explains(row, exact, np.array([0.5, 1.0]))  # not what it returns there
    assert not div.explains(row, np.array([2.0, 1.0]), np.array([2.0, 1.1]))


def test_an_error_is_explained_only_by_the_message_it_declares():
    div = Divergence("k", ALWAYS, raises=r"Cannot pack empty tensors")
    assert div.explains({"status": "error", "detail": "torch: RuntimeError: Cannot pack empty tensors."})
    assert not div.explains({"status": "error", "detail": "torch: RuntimeError: CUDA out of memory"})
    assert not Divergence("k", ALWAYS, bound=1.0).explains({"status": "error", "detail": "anything"})


def test_two_divergences_of_one_case_explain_a_row_together_and_no_further():
    a, b = Divergence("a", ALWAYS, outcome=c.zero_where_nan), Divergence("b", ALWAYS, outcome=c.nan_where_finite)
    row = {"status": "fail", "atol": 1e-10, "scale": 2.0}
    exact, got = np.array([np.nan, 1.0, 2.0]), np.array([0.0, np.nan, 2.0])
    assert not a.explains(row, exact, got) and not b.explains(row, exact, got)
    assert together([a, b]).explains(row, exact, got)
    assert not together([a, b]).explains(row, exact, got + [0.0, 0.0, 0.5])


def softplus_case():
    """beta x = 2 and 3 are above the threshold 1.5 (the oracle, as PyTorch, returns x there); 0.5 is below."""
    return Case("softplus", "float64", {"beta": 1.0, "threshold": 1.5}, {"x": np.array([2.0, 3.0, 0.5])},
                {"y": np.array([1.0, -2.0, 0.5])})


def tensorflow_softplus(at=None, by=0.0):
    """TensorFlow's softplus, on the curve everywhere (no threshold), its output moved by ``by`` at ``at``."""
    def answer(case):
        z = case.attrs["beta"] * case.arrays["x"]
        y = np.logaddexp(0.0, z) / case.attrs["beta"]
        if at is not None:
            y[at] += by
        return {OUT: {"y": y}, GRAD: {"x": case.cotangents["y"] / (1.0 + np.exp(-z))}}
    return Framework("tensorflow", answer)


def test_softplus_on_the_curve_is_the_known_divergence():
    rows = check(softplus_case(), Oracle(), tensorflow_softplus())
    assert statuses(rows) == {"y": "known_divergence", "x": "known_divergence"}
    assert {r["divergence"] for r in rows} == {"tf-softplus-no-threshold"}


@pytest.mark.parametrize("at", [0, 2], ids=["off-the-curve-above-the-threshold", "below-the-threshold"])
def test_a_second_error_inside_softplus_no_threshold_still_fails(at):
    """The issue's case: 'any error' explained a softplus check 5.5e291 times its tolerance."""
    rows = {r["name"]: r for r in check(softplus_case(), Oracle(), tensorflow_softplus(at, 1e-3))}
    assert rows["y"]["status"] == "fail" and rows["y"]["divergence"] == "tf-softplus-no-threshold"
    assert rows["x"]["status"] == "known_divergence"


def clip_case():
    return Case("clip_by_norm", "float64", {"max_norm": np.inf, "error_if_nonfinite": False, "route": "function"},
                {"g": np.array([3.0, 4.0, 1.0])}, {})


def tensorflow_clip(nan_at, off_at=None):
    """tf.clip_by_norm with an infinite threshold: inf / inf = NaN at ``nan_at``; 0.5 too much at ``off_at``."""
    def answer(case):
        g = case.arrays["g"].copy()
        g[list(nan_at)] = np.nan
        if off_at is not None:
            g[off_at] += 0.5
        return {OUT: {"g": g}, GRAD: {}}
    return Framework("tensorflow", answer)


def test_nan_where_the_exact_value_is_finite_is_the_known_divergence_position_by_position():
    rows = check(clip_case(), Oracle(), tensorflow_clip([0, 1, 2]))
    assert statuses(rows) == {"g": "known_divergence"}
    rows = check(clip_case(), Oracle(), tensorflow_clip([0, 1], off_at=2))  # a finite position off as well
    assert statuses(rows) == {"g": "fail"} and rows[0]["divergence"] == "tf-clip-by-norm-nan-threshold"
