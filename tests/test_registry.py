"""The registries agree with each other: every catalogue layer is built (or declared
not expressible) by every adapter, every convention and divergence names what exists,
and every divergence has its prose (and every piece of prose a divergence)."""

import numpy as np
import pytest

from gradparity.adapters import ADAPTERS, FrameworkAdapter, NotApplicable
from gradparity.reference import DTYPES, LAYERS, Case
from gradparity.reports import divergences
from gradparity.reports.compare import check

FRAMEWORKS = {name: a for name, a in ADAPTERS.items() if isinstance(a, FrameworkAdapter)}


@pytest.mark.parametrize("framework", sorted(FRAMEWORKS))
def test_every_catalogue_layer_has_a_builder_or_a_declared_reason(framework):
    builders = FRAMEWORKS[framework].builders
    missing = [layer for layer in LAYERS if not builders.covers(layer)]
    assert not missing, f"{framework} has neither a builder nor a not_expressible declaration for {missing}"
    assert all(reason.strip() for reason in builders.inexpressible.values())
    assert set(builders.build) | set(builders.inexpressible) <= set(LAYERS), "a builder for no catalogue layer"


@pytest.mark.parametrize("framework", sorted(FRAMEWORKS))
def test_every_convention_names_the_layers_own_convention_attributes(framework):
    for layer, convention in FRAMEWORKS[framework].builders.conventions.items():
        assert set(convention.values) <= set(LAYERS[layer].conventions), (layer, convention.values)
        assert convention.reason.strip()


def test_a_layer_declared_not_expressible_is_not_applicable_with_its_reason():
    from gradparity.adapters.base import Builders

    class Nothing(FrameworkAdapter):
        name = "nothing"

    builders = Builders("nothing")
    builders.not_expressible("relu", "no ReLU in this framework")
    case = Case("relu", "float64", {}, {"x": np.ones((2,))}, {"y": np.ones((2,))})
    with pytest.raises(NotApplicable, match="no ReLU in this framework"):
        Nothing(builders).run(case)
    with pytest.raises(ValueError, match="already has a builder"):
        builders("relu")(lambda t, a, dtype: None)


def test_every_divergence_names_catalogue_layers_known_frameworks_and_dtypes():
    for d in divergences.KNOWN_DIVERGENCES:
        assert d.layers and set(d.layers) <= set(LAYERS), (d.key, set(d.layers) - set(LAYERS))
        assert d.frameworks is None or set(d.frameworks) <= set(ADAPTERS), d.key
        assert d.dtypes is None or set(d.dtypes) <= set(DTYPES), d.key
        assert len(d.layers) == len(set(d.layers)), f"{d.key} names a layer twice"


def test_every_divergence_has_its_prose_and_all_prose_is_used():
    keys = [d.key for d in divergences.KNOWN_DIVERGENCES]
    prose = divergences.prose()
    assert sorted(set(keys) - set(prose)) == [], "divergences without a reason in divergences.toml"
    assert sorted(set(prose) - set(keys)) == [], "prose in divergences.toml that no divergence uses"
    for key in keys:
        assert {"reason", "measured"} <= set(prose[key]) <= {"reason", "measured", "why_unbounded"}, key
        assert all(v.strip() for v in prose[key].values()), key


def test_every_builtin_layer_names_its_family():
    assert all(layer.family != "other" for layer in LAYERS.values())


def test_either_sides_divergence_explains_a_row_of_two_frameworks(monkeypatch):
    """A row of a check between two runners is explained by a divergence of either one, even
    where the candidate has a divergence of its own there that does not explain it."""

    class Fixed:
        def __init__(self, name, y):
            self.name, self.y = name, y

        def version(self):
            return "1"

        def convention(self, layer):
            return None

        def run(self, case):
            return {"out": {"y": np.full((2,), self.y)}, "grad": {"x": case.cotangents["y"]}}

    case = Case("relu", "float64", {}, {"x": np.ones((2,))}, {"y": np.ones((2,))})
    monkeypatch.setattr(divergences, "KNOWN_DIVERGENCES", [
        divergences.Divergence("the-candidates-bounded-one", {("relu",): lambda c, ev: True}, ("cand",), bound=1e-12),
        divergences.Divergence("the-references-unbounded-one", {("relu",): lambda c, ev: True}, ("ref",),
                               bound=divergences.UNBOUNDED)])
    rows = {r["name"]: r for r in check(case, Fixed("ref", 1.0), Fixed("cand", 2.0))}
    assert rows["y"]["status"] == "known_divergence"
    assert rows["y"]["divergence"] == "the-references-unbounded-one"
    assert rows["x"]["status"] == "pass" and rows["x"]["divergence"] == "the-candidates-bounded-one"
