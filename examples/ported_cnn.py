"""A small CNN written in both frameworks, as a port would be: one genuine porting mistake behind a flag.

    gradparity pair ported_cnn:pair                         # the faithful port: every layer agrees
    gradparity pair ported_cnn:mistaken                     # Keras' BatchNormalization defaults kept
    gradparity pair ported_cnn:hand_copied --weights as_is  # weights copied by hand, the flatten order forgotten

Run from this directory (``-p``-style: the module is imported from the current directory).
"""

import numpy as np
import torch
import keras

from gradparity.adapters.pair import Pair


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
            torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2))
        self.head = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(8 * 4 * 4, 32), torch.nn.ReLU(),
                                        torch.nn.Linear(32, 10))

    def forward(self, x):
        return self.head(self.features(x))


def keras_net(faithful: bool = True):
    # PyTorch's BatchNorm2d: eps 1e-5, momentum 0.1 (new = 0.9 old + 0.1 batch); Keras' defaults: 1e-3, 0.99
    norm = dict(epsilon=1e-5, momentum=0.9) if faithful else {}
    return keras.Sequential([
        keras.Input((16, 16, 3)),
        keras.layers.Conv2D(8, 3, padding="same"), keras.layers.BatchNormalization(**norm), keras.layers.ReLU(),
        keras.layers.MaxPooling2D(2),
        keras.layers.Conv2D(8, 3, padding="same", activation="relu"), keras.layers.MaxPooling2D(2),
        keras.layers.Flatten(), keras.layers.Dense(32, activation="relu"), keras.layers.Dense(10)])


def batch(n: int = 8):
    rng = np.random.default_rng(0)
    return rng.standard_normal((n, 3, 16, 16)).astype("float32"), rng.integers(0, 10, n)


def pair():
    torch.manual_seed(0)
    x, y = batch()
    return Pair(torch=Net(), keras=keras_net(), inputs=x, target=y, loss="cross_entropy")


def mistaken():
    torch.manual_seed(0)
    x, y = batch()
    return Pair(torch=Net(), keras=keras_net(faithful=False), inputs=x, target=y, loss="cross_entropy")


def hand_copied():
    """Weights copied by hand, as a first port often does: kernels transposed right, but the first dense layer's
    rows left in PyTorch's (C, H, W) order although Keras flattens (H, W, C)."""
    torch.manual_seed(0)
    net, port = Net(), keras_net()
    convs = [m for m in net.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear, torch.nn.BatchNorm2d))]
    layers = [layer for layer in port.layers if layer.weights]
    for m, layer in zip(convs, layers):
        w = m.weight.detach().numpy()
        if isinstance(m, torch.nn.Conv2d):
            layer.set_weights([w.transpose(2, 3, 1, 0), m.bias.detach().numpy()])
        elif isinstance(m, torch.nn.Linear):
            layer.set_weights([w.T, m.bias.detach().numpy()])  # the flatten order: forgotten
        else:
            layer.set_weights([w, m.bias.detach().numpy(), m.running_mean.numpy(), m.running_var.numpy()])
    x, y = batch()
    return Pair(torch=net, keras=port, inputs=x, target=y, loss="cross_entropy")
