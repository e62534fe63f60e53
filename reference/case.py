"""A Case: one layer, one set of numbers, in the canonical layout.

A Case is plain data (NumPy arrays, Python scalars) that every framework can
be fed from: the layer name, its attributes, its named arrays (inputs and
parameters alike, in the catalogue's canonical layout), the cotangent ``g`` of
its output, and the dtype the frameworks compute in. Arrays are stored already
rounded to that dtype, so the float64 oracle judges a float32 framework on
exactly the numbers the framework saw.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

DTYPES = ("float32", "float64")


@dataclass(frozen=True)
class Case:
    layer: str
    dtype: str
    attrs: dict = field(default_factory=dict)
    arrays: dict = field(default_factory=dict)
    g: np.ndarray | None = None

    @property
    def id(self) -> str:
        """A short content hash: equal cases share an id across runs and workers."""
        h = hashlib.sha1()
        h.update(f"{self.layer}|{self.dtype}|{json.dumps(self.attrs, sort_keys=True, default=str)}".encode())
        for name in sorted(self.arrays):
            a = np.ascontiguousarray(self.arrays[name])
            h.update(f"|{name}:{a.dtype}:{a.shape}".encode())
            h.update(a.tobytes())
        if self.g is not None:
            h.update(np.ascontiguousarray(self.g).tobytes())
        return h.hexdigest()[:12]

    def describe(self) -> str:
        """One line a person can read: the layer, its attributes and shapes."""
        shapes = ", ".join(f"{k}{tuple(v.shape)}" for k, v in self.arrays.items())
        attrs = ", ".join(f"{k}={v!r}" for k, v in self.attrs.items())
        return f"{self.layer}[{self.dtype}]({shapes}{'; ' if attrs else ''}{attrs})"

    def save(self, path: str | Path) -> Path:
        """Write the case to an ``.npz`` file that :func:`load` reads back exactly."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = json.dumps({"layer": self.layer, "dtype": self.dtype, "attrs": self.attrs})
        extra = {} if self.g is None else {"__g__": self.g}
        with path.open("wb") as f:  # an open file keeps numpy from appending ".npz"
            np.savez(f, __meta__=np.array(meta), **extra, **{f"a_{k}": v for k, v in self.arrays.items()})
        return path


def load(path: str | Path) -> Case:
    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(str(z["__meta__"]))
        arrays = {k[2:]: z[k] for k in z.files if k.startswith("a_")}
        g = z["__g__"] if "__g__" in z.files else None
    return Case(meta["layer"], meta["dtype"], meta["attrs"], arrays, g)
