"""PyTorch builders: pooling. Padding MaxPool2d/AvgPool2d cannot say themselves
(asymmetric 'same', more than half the kernel) is done first: F.pad(value=-inf)
before max pooling, nn.ZeroPad2d before counted average pooling."""

from ...reference import Convention
from ...reference.conv import resolve_padding  # the oracle's rule for TensorFlow-style 'same': one formula
from ..base import Built
from .core import builder, nn, torch


def _pool_pads(x_shape, a):
    kernel, stride = (a["kernel_h"], a["kernel_w"]), (a["stride_h"], a["stride_w"])
    dilation = (a.get("dilation_h", 1), a.get("dilation_w", 1))
    pads = resolve_padding(a["padding"], ((a["pad_h"],) * 2, (a["pad_w"],) * 2), tuple(x_shape[-2:]),
                           kernel, stride, dilation)
    return kernel, stride, dilation, pads, all(before == after for before, after in pads)


@builder("max_pool2d", convention=Convention(
    {"tie": "first", "nan_route": "last"},
    "the first maximum in row-major window order gets the gradient (as a scan that replaces its candidate only on "
    "val > max would); measured with torch 2.13: in all 98 of 150 drawn cases where first and last differ it "
    "matches tie=first, and -0.0 vs 0.0 routes to the first. NaN replaces the candidate every time (val > max || "
    "isnan(val)): a window holding NaN gives NaN and its LAST NaN gets the gradient ([[1, nan], [nan, 2]] routes to "
    "(1, 0))"))
def max_pool2d(t, a, dtype):
    kernel, stride, dilation, pads, symmetric = _pool_pads(t["x"].shape, a)
    padding, pad = (pads[0][0], pads[1][0]), (lambda x: x)
    if not symmetric or any(2 * b > k for (b, _), k in zip(pads, kernel)):
        # 'same' with one pixel more at the bottom/right, or more than MaxPool2d takes (half the
        # undilated kernel; 'same' pads half the dilated one): -inf never wins a window
        padding = 0
        pad = lambda x: torch().nn.functional.pad(x, (*pads[1], *pads[0]), value=float("-inf"))  # noqa: E731
    pool = nn().MaxPool2d(kernel, stride, padding=padding, dilation=dilation, return_indices=False,
                          ceil_mode=a["ceil_mode"])
    return Built(lambda t: pool(pad(t["x"])))


def _uncounted_asymmetric(case):
    a = case.attrs
    *_, pads, symmetric = _pool_pads(case.arrays["x"].shape, a)
    if not symmetric and not a["count_include_pad"] and a["divisor_override"] is None:
        return (f"AvgPool2d pads symmetrically; the asymmetric 'same' padding {pads} left out of the count has no "
                "PyTorch form")


@builder("avg_pool2d", refuses=_uncounted_asymmetric)
def avg_pool2d(t, a, dtype):
    kernel, stride, _, pads, symmetric = _pool_pads(t["x"].shape, a)
    padding, pad = (pads[0][0], pads[1][0]), (lambda x: x)
    if not symmetric:  # counted (or divided by divisor_override): the zeros padded first are cells
        padding, pad = 0, nn().ZeroPad2d((*pads[1], *pads[0]))
    pool = nn().AvgPool2d(kernel, stride, padding=padding, ceil_mode=a["ceil_mode"],
                          count_include_pad=a["count_include_pad"], divisor_override=a["divisor_override"])
    return Built(lambda t: pool(pad(t["x"])))


@builder("global_avg_pool2d")
def global_avg_pool2d(t, a, dtype):
    pool = nn().AdaptiveAvgPool2d((1, 1))
    return Built(lambda t: torch().flatten(pool(t["x"]), 1))


@builder("adaptive_avg_pool2d")
def adaptive_avg_pool2d(t, a, dtype):
    pool = nn().AdaptiveAvgPool2d((a["output_h"], a["output_w"]))
    return Built(lambda t: pool(t["x"]))
