"""The structure every parity test is parametrized over: layer x framework x dtype."""

import pytest

from gradparity.adapters import ADAPTERS
from gradparity.reference import DTYPES, LAYERS


def layer_framework_dtype():
    """Test ids read ``dense-torch-float32``: the same key names report rows."""
    return [pytest.param(layer, fw, dt, id=f"{layer}-{fw}-{dt}")
            for layer in LAYERS for fw in ADAPTERS for dt in DTYPES]


def failure_message(case, rows) -> str:
    lines = [f"{case.describe()} (case {case.id})"]
    for r in rows:
        lines.append(f"  {r['framework']} {r['tensor']}{r['shape']}: {r['status']}, "
                     f"err_eps={r['err_eps']:.3g}, atol={r['atol']:.3g}: {r['detail']}")
    reproduce = next((r["reproduce"] for r in rows if r["reproduce"]), "")
    if reproduce:
        lines.append(f"  reproduce: {reproduce}")
    return "\n".join(lines)
