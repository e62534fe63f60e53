"""What every Keras builder shares: the lazily imported framework, the builder
registry, layouts, and the settings every optimizer is given."""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import sys
import tempfile

from ..base import Builders

builder = Builders("tensorflow")

_tf = None


def tf():
    global _tf
    if _tf is None:
        quiet = "TF_CPP_MIN_LOG_LEVEL" not in os.environ  # a user who set it wants what it lets through
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        os.environ.setdefault("KERAS_BACKEND", "tensorflow")
        with _start_up_logs_held() if quiet else contextlib.nullcontext():
            _tf = importlib.import_module("tensorflow")
        _tf.get_logger().addFilter(_NotRetracing())
    return _tf


class _NotRetracing(logging.Filter):
    """The function and xla modes make a new tf.function per case on purpose (each case's layer
    is new): TensorFlow's warning that tf.function retraces is about that, every few cases."""

    def filter(self, record):
        return "triggered tf.function retracing" not in record.getMessage()


@contextlib.contextmanager
def _start_up_logs_held():
    """TensorFlow 2.21's C++ libraries log at load time, before TF_CPP_MIN_LOG_LEVEL is read
    ("All log messages before absl::InitializeLog() is called are written to STDERR", the
    oneDNN notice): file descriptor 2 goes to a temporary file while it loads, and what
    was written there is shown only if the import fails."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            held.seek(0)
            sys.stderr.write(held.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def keras():
    return importlib.import_module("keras")


# Keras on CPU is channels-last: NCHW -> NHWC and back.
NHWC, NCHW = [0, 2, 3, 1], [0, 3, 1, 2]


def dense_layer(units, W, b, dtype):
    """keras.layers.Dense holding canonical W (in, out) as its kernel (same layout)."""
    layer = keras().layers.Dense(units, use_bias=b is not None, dtype=dtype)
    layer.build((None, W.shape[0]))
    layer.kernel.assign(W)
    if b is not None:
        layer.bias.assign(b)
    return layer


# Every optimizer gets every argument, clipping and EMA off unless a case asks for them.
NO_CLIPPING = dict(clipnorm=None, clipvalue=None, global_clipnorm=None, use_ema=False, ema_momentum=0.99,
                   ema_overwrite_frequency=None, loss_scale_factor=None, gradient_accumulation_steps=None)

KERAS_LR = ("Held in float32 for float64 variables (measured): the learning rate is a float32 variable "
            "(backend.floatx()); weight_decay, SGD's momentum, Adam's betas in beta^t and Adagrad's initial "
            "accumulator go through tf.cast / ops.cast of a Python float, which makes a float32 tensor first "
            "(RMSprop's rho and momentum, epsilon and every 1 - beta stay exact)")
