"""The oracle checked against numerical differentiation, for every catalogue layer.

Cases are drawn in general position (``edges=False``): a central difference
across a kink or a tie measures nothing. Two checks, both of vjp(g) = J^T g:
the dot-product test <u, J^T g> = <J u, g> for a random direction u on every
case, and the full gradient, element by element, on tiny cases.
"""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from gradparity.reference import GRAD, LAYERS, evaluate
from gradparity.reference.numdiff import directional_derivative, numerical_gradients, rounding_bound
from gradparity.reports.tolerances import NUMERICAL
from gradparity.tests import plugin
from gradparity.tests.plugin import profile
from gradparity.tests.strategies import cases

H = 1e-5
FULL_JACOBIAN_MAX_ELEMENTS = 40


def pytest_generate_tests(metafunc):
    """Every layer with a vjp, the user's own included (activating the plugin loads them)."""
    plugin._state(metafunc.config)
    metafunc.parametrize("layer", [name for name, layer in LAYERS.items() if layer.vjp is not None])


@settings(profile())
@given(data=st.data())
def test_vjp_matches_numerical_derivative(layer, data):
    case = data.draw(cases(layer, "float64", edges=False), label="case")
    truth = evaluate(case)
    grads = truth.outputs[GRAD]
    assert {n: g.shape for n, g in grads.items()} == {n: case.arrays[n].shape for n in grads}, case.describe()
    if not any(g.size for g in grads.values()):
        # Zero-size inputs (a batch of 0): nothing to perturb, and the objective may be
        # NaN (a mean over nothing), so there is no difference to take.
        return
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="direction seed"))
    u = {name: rng.standard_normal(g.shape) for name, g in grads.items()}
    analytic = sum(float(np.sum(u[n] * grads[n])) for n in grads)
    # An ill-conditioned case (a batch norm of two nearly equal values) curves on
    # the scale 1/kappa: the step shrinks with it, or truncation error dominates.
    h = H / truth.condition
    numeric = directional_derivative(case, u, h)
    scale = max(sum(float(np.abs(u[n] * grads[n]).sum()) for n in grads), abs(numeric), 1e-12)
    rounding = rounding_bound(case, h)
    assert abs(analytic - numeric) <= NUMERICAL.rtol * scale + rounding, (
        f"{case.describe()}: <u, vjp(g)> = {analytic!r} but <J u, g> = {numeric!r}")

    if sum(g.size for g in grads.values()) <= FULL_JACOBIAN_MAX_ELEMENTS:
        numeric_grads = numerical_gradients(case, h)
        for name, g in grads.items():
            gscale = max(float(np.abs(g).max(initial=0.0)),
                         max(float(np.abs(c).max(initial=0.0)) for c in case.cotangents.values()), 1e-12)
            err = float(np.abs(g - numeric_grads[name]).max(initial=0.0))
            assert err <= NUMERICAL.rtol * gscale + rounding, (
                f"{case.describe()}: gradient of {name} off by {err:.3g} (scale {gscale:.3g})\n"
                f"vjp:\n{g}\nnumerical:\n{numeric_grads[name]}")
