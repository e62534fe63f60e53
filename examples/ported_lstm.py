"""An LSTM classifier over padded token sequences, written in both frameworks.

    gradparity pair ported_lstm:pair      # packed sequences in PyTorch, a mask from Embedding(mask_zero) in Keras
    gradparity pair ported_lstm:mistaken  # the Keras port forgot mask_zero: padding runs as data

Run from this directory.
"""

import numpy as np
import torch
import keras

from gradparity.adapters.pair import Pair

VOCAB, EMBED, HIDDEN, CLASSES, STEPS = 20, 8, 16, 4, 12


class Classifier(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(VOCAB, EMBED, padding_idx=0)
        self.lstm = torch.nn.LSTM(EMBED, HIDDEN, batch_first=True)
        self.out = torch.nn.Linear(HIDDEN, CLASSES)

    def forward(self, ids):
        lengths = (ids != 0).sum(dim=1)
        packed = torch.nn.utils.rnn.pack_padded_sequence(self.embed(ids), lengths, batch_first=True,
                                                         enforce_sorted=False)
        _, (h, _) = self.lstm(packed)
        return self.out(h[-1])


def keras_classifier(mask: bool = True):
    return keras.Sequential([keras.Input((STEPS,), dtype="int32"), keras.layers.Embedding(VOCAB, EMBED, mask_zero=mask),
                             keras.layers.LSTM(HIDDEN), keras.layers.Dense(CLASSES)])


def batch(n: int = 6):
    rng = np.random.default_rng(0)
    ids = rng.integers(1, VOCAB, (n, STEPS))
    lengths = rng.integers(1, STEPS + 1, n)
    ids[np.arange(STEPS)[None, :] >= lengths[:, None]] = 0  # padding after each sequence's end
    return ids.astype("int64"), rng.integers(0, CLASSES, n)


def pair():
    torch.manual_seed(0)
    ids, labels = batch()
    return Pair(torch=Classifier(), keras=keras_classifier(), inputs=ids, target=labels)


def mistaken():
    torch.manual_seed(0)
    ids, labels = batch()
    return Pair(torch=Classifier(), keras=keras_classifier(mask=False), inputs=ids, target=labels)
