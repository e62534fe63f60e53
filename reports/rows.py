"""The row schema: one row per (case, candidate, reference, compared name).

A row names what it compares by ``kind`` and ``name``: kind ``out`` is a
forward output (``y``, ``loss``, ``h_n``...), kind ``grad`` the gradient of an
input or parameter (``x``, ``W``...), kind ``flow`` the norm of the gradient
reaching each time step of a layer through time (``profile`` holds both
sides' values, as JSON); later families add kinds (per-step
states, per-layer quantities). ``framework`` is the candidate runner and
``reference`` what it was compared with (``oracle`` unless two frameworks are
compared with each other).
"""

from __future__ import annotations

STATUSES = ("pass", "fail", "known_divergence", "not_applicable", "error")
COLUMNS = ["layer", "framework", "framework_version", "reference", "dtype", "case", "kind", "name", "shape",
           "max_abs_err", "max_rel_err", "err_eps", "scale", "condition", "atol", "rtol", "status", "detail",
           "convention", "divergence", "tolerance_reason", "attrs", "reproduce", "profile"]
NUMERIC = ["max_abs_err", "max_rel_err", "err_eps", "scale", "condition", "atol", "rtol"]
ROW_KEY = ["layer", "framework", "reference", "dtype", "case", "kind", "name"]
GROUP_KEY = ["layer", "framework", "dtype"]
