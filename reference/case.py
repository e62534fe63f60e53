"""A Case: one layer, one set of numbers, in the canonical layout.

A Case is plain data (NumPy arrays, Python scalars) that every runner can be
fed from: the layer name, its attributes, its named arrays (inputs and
parameters alike, in the catalogue's canonical layout), one cotangent per
forward output (``cotangents["y"]``; ``cotangents["loss"] = 1`` for a scalar loss),
and the dtype the frameworks compute in. Arrays are stored already rounded to
that dtype, so the float64 oracle judges a float32 framework on exactly the
numbers the framework saw.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import zipfile
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
    cotangents: dict = field(default_factory=dict)

    @property
    def id(self) -> str:
        """A short content hash: equal cases share an id across runs and workers."""
        h = hashlib.sha1()
        h.update(f"{self.layer}|{self.dtype}|{json.dumps(self.attrs, sort_keys=True, default=str)}".encode())
        for prefix, named in (("a", self.arrays), ("g", self.cotangents)):
            for name in sorted(named):
                a = np.ascontiguousarray(named[name])
                h.update(f"|{prefix}.{name}:{a.dtype}:{a.shape}".encode())
                h.update(a.tobytes())
        return h.hexdigest()[:12]

    def replace(self, **changes) -> Case:
        return dataclasses.replace(self, **changes)

    def describe(self) -> str:
        """One line a person can read: the layer, its attributes and shapes."""
        shapes = ", ".join(f"{k}{tuple(np.shape(v))}" for k, v in self.arrays.items())
        attrs = ", ".join(f"{k}={v!r}" for k, v in self.attrs.items())
        return f"{self.layer}[{self.dtype}]({shapes}{'; ' if attrs else ''}{attrs})"

    def save(self, path: str | Path) -> Path:
        """Write the case to an ``.npz`` file that :func:`load` reads back exactly
        (atomically: a reader never sees half a file)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = json.dumps({"layer": self.layer, "dtype": self.dtype, "attrs": self.attrs})
        tmp = path.with_name(f".{path.name}.tmp")
        with tmp.open("wb") as f:  # an open file keeps numpy from appending ".npz"
            np.savez(f, __meta__=np.array(meta), **{f"a_{k}": v for k, v in self.arrays.items()},
                     **{f"g_{k}": v for k, v in self.cotangents.items()})
        tmp.replace(path)
        return path


def as_float64(arrays: dict) -> dict:
    """The arrays in float64, where the oracle computes; integer arrays (labels,
    indices, lengths) and booleans stay as they are."""
    return {k: v if v.dtype.kind in "iub" else v.astype(np.float64) for k, v in arrays.items()}


def to_json(case: Case) -> str:
    """The case as one JSON line, exactly (floats keep every bit: JSON holds their
    shortest round-tripping repr). Cheap enough to write before every example."""
    def arrays(named):
        return {k: {"dtype": str(v.dtype), "shape": list(v.shape), "data": v.ravel().tolist()} for k, v in named.items()}

    return json.dumps({"layer": case.layer, "dtype": case.dtype, "attrs": case.attrs,
                       "arrays": arrays(case.arrays), "cotangents": arrays(case.cotangents)})


def from_json(text: str) -> Case:
    d = json.loads(text)

    def arrays(named):
        return {k: np.array(v["data"], dtype=v["dtype"]).reshape(v["shape"]) for k, v in named.items()}

    return Case(d["layer"], d["dtype"], _with_defaults(d["layer"], d["attrs"]), arrays(d["arrays"]),
                arrays(d["cotangents"]))


def _with_defaults(layer_name, attrs):
    """``attrs`` plus the default of every attribute the layer gained after the case
    was saved (a ``Choice`` with a ``default``): an old case still means what it meant."""
    from .catalogue import LAYERS
    from .spec import NO_DEFAULT, Choice

    layer = LAYERS.get(layer_name)
    if layer is None or not isinstance(attrs, dict):
        return attrs
    added = {name: spec.default for name, spec in layer.attrs.items()
             if name not in attrs and isinstance(spec, Choice) and spec.default is not NO_DEFAULT}
    return {**attrs, **added}


def load(path: str | Path) -> Case:
    """Read a case written by :meth:`Case.save`; ``ValueError`` saying what is
    wrong with a missing, unreadable or foreign file."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"case file {path}: no such file")
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["__meta__"]))
            arrays = {k[2:]: z[k] for k in z.files if k.startswith("a_")}
            cotangents = {k[2:]: z[k] for k in z.files if k.startswith("g_")}
            if "__g__" in z.files:  # a case saved before outputs had names: one output, one cotangent
                from .catalogue import LAYERS

                layer = LAYERS.get(meta["layer"])
                cotangents = {(layer.output_names or ("y",))[0] if layer else "y": z["__g__"]}
        return Case(meta["layer"], meta["dtype"], _with_defaults(meta["layer"], meta["attrs"]), arrays, cotangents)
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile, json.JSONDecodeError) as e:
        raise ValueError(f"case file {path}: not a gradparity case ({type(e).__name__}: {e})") from None
