"""What every PyTorch builder shares: the lazily imported framework, the builder
registry, and how canonical numbers get into a module's parameters."""

from __future__ import annotations

import importlib

from ..base import Builders

builder = Builders("torch")

_torch = None


def torch():
    global _torch
    if _torch is None:
        _torch = importlib.import_module("torch")
    return _torch


def nn():
    return torch().nn


def transpose(v):
    return v.T


def set_(param, value):
    """Copy canonical numbers into a module's parameter (layout already converted)."""
    with torch().no_grad():
        param.copy_(value)
    return param


def linear(n_in, n_out, W, b, dtype):
    """nn.Linear holding canonical W (in, out) as its (out, in) weight."""
    lin = nn().Linear(n_in, n_out, bias=b is not None, dtype=dtype)
    set_(lin.weight, W.T)
    if b is not None:
        set_(lin.bias, b)
    return lin
