"""A user's ported model pair (adapters/pair): layers paired, weights transferred or checked, the
first divergent layer named with the default that explains it, and bad input refused in one line."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
keras = pytest.importorskip("keras")

from gradparity.adapters.pair import PairError, compare_models  # noqa: E402
from gradparity.adapters.pair.layers import keras_weights, unmatched  # noqa: E402
from gradparity.adapters.pair.run import keras_units, pair_units, Unit  # noqa: E402
from gradparity.reports.cli import main as cli  # noqa: E402
from gradparity.reports.tolerances import DEFAULT  # noqa: E402

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
RNG = np.random.default_rng(0)


@pytest.fixture(scope="module")
def examples():
    sys.path.insert(0, str(EXAMPLES))
    import ported_cnn
    import ported_lstm

    yield ported_cnn, ported_lstm
    sys.path.remove(str(EXAMPLES))


def _run(p, **kw):
    return compare_models(p.torch, p.keras, p.inputs, target=p.target, loss=p.loss, **kw)


# ---- the weight mappings: each kind's PyTorch module and Keras layer compute the same thing

def _one(torch_module, keras_layer, x, keras_x=None):
    """Transfer torch_module's weights into keras_layer (called on keras_x once to build it) and
    return both outputs, Keras' in PyTorch's layout."""
    keras_x = x if keras_x is None else keras_x
    keras_layer(keras_x, keras_x) if isinstance(keras_layer, keras.layers.MultiHeadAttention) else keras_layer(keras_x)
    kind = {"Linear": "dense", "Conv1d": "conv1d", "Conv2d": "conv2d", "ConvTranspose2d": "conv_transpose2d",
            "BatchNorm2d": "batch_norm", "LayerNorm": "layer_norm", "Embedding": "embedding", "LSTM": "lstm",
            "GRU": "gru", "RNN": "rnn", "MultiheadAttention": "multi_head_attention"}[type(torch_module).__name__]
    keras_layer.set_weights(keras_weights(kind, torch_module))
    with torch.no_grad():
        mine = torch_module.eval()(*([torch.as_tensor(x)] * (3 if kind == "multi_head_attention" else 1)))
    mine = mine[0] if isinstance(mine, tuple) else mine
    theirs = (keras_layer(keras_x, keras_x) if kind == "multi_head_attention" else keras_layer(keras_x, training=False))
    return mine.numpy(), np.asarray(theirs)


MAPPINGS = {
    "dense": lambda: (torch.nn.Linear(5, 3), keras.layers.Dense(3), (4, 5), None),
    "conv1d": lambda: (torch.nn.Conv1d(3, 4, 3), keras.layers.Conv1D(4, 3), (2, 3, 7), (0, 2, 1)),
    "conv2d": lambda: (torch.nn.Conv2d(3, 4, (3, 2)), keras.layers.Conv2D(4, (3, 2)), (2, 3, 6, 5), (0, 2, 3, 1)),
    "conv_transpose2d": lambda: (torch.nn.ConvTranspose2d(3, 4, 3, stride=2),
                                 keras.layers.Conv2DTranspose(4, 3, strides=2), (2, 3, 4, 4), (0, 2, 3, 1)),
    "batch_norm": lambda: (torch.nn.BatchNorm2d(3), keras.layers.BatchNormalization(epsilon=1e-5), (2, 3, 4, 4),
                           (0, 2, 3, 1)),
    "layer_norm": lambda: (torch.nn.LayerNorm(6), keras.layers.LayerNormalization(epsilon=1e-5), (2, 3, 6), None),
    "lstm": lambda: (torch.nn.LSTM(3, 4, batch_first=True), keras.layers.LSTM(4, return_sequences=True), (2, 5, 3),
                     None),
    "gru": lambda: (torch.nn.GRU(3, 4, batch_first=True), keras.layers.GRU(4, return_sequences=True), (2, 5, 3), None),
    "rnn": lambda: (torch.nn.RNN(3, 4, batch_first=True), keras.layers.SimpleRNN(4, return_sequences=True),
                    (2, 5, 3), None),
    "multi_head_attention": lambda: (torch.nn.MultiheadAttention(6, 2, batch_first=True),
                                     keras.layers.MultiHeadAttention(2, 3), (2, 4, 6), None),
}


@pytest.mark.parametrize("kind", list(MAPPINGS))
def test_every_weight_mapping_makes_the_two_layers_compute_the_same(kind):
    torch.manual_seed(0)
    module, layer, shape, to_keras = MAPPINGS[kind]()
    for p in module.parameters():  # no zero biases or unit scales: a wrong mapping must show
        with torch.no_grad():
            p.copy_(torch.as_tensor(RNG.standard_normal(tuple(p.shape)).astype("float32")))
    if kind == "batch_norm":
        module.running_mean.copy_(torch.as_tensor(RNG.standard_normal(3).astype("float32")))
        module.running_var.copy_(torch.as_tensor(RNG.uniform(0.5, 2.0, 3).astype("float32")))
    x = RNG.standard_normal(shape).astype("float32")
    keras_x = None if to_keras is None else np.ascontiguousarray(x.transpose(to_keras))
    mine, theirs = _one(module, layer, x, keras_x)
    if to_keras is not None:
        theirs = np.moveaxis(theirs, -1, 1)
    # the project's float32 tolerance, on the output's scale (one layer: no growth with depth)
    assert np.abs(theirs.astype(np.float64) - mine).max() <= DEFAULT["float32"].rtol * np.abs(mine).max()


def test_an_embedding_maps_as_it_is():
    module = torch.nn.Embedding(7, 3)
    layer = keras.layers.Embedding(7, 3)
    ids = np.array([[1, 6, 0]])
    mine, theirs = _one(module, layer, ids)
    np.testing.assert_array_equal(theirs, mine)


def test_the_weight_check_names_a_transposed_square_weight_and_other_orders():
    w = RNG.standard_normal((4, 4))
    assert unmatched(w, w) == ""
    assert unmatched(w, w.T) == "matches only up to a transpose"
    assert "another order" in unmatched(w, w[::-1])
    assert "another shape" in unmatched(w, w.reshape(2, 8))
    assert unmatched(w, w + 1) == "differs"


# ---- pairing


def _t(name, kind):
    return Unit(name, kind, None)


def test_pairing_follows_call_order_and_kind_and_reports_what_is_left():
    k_model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(4), keras.layers.Dropout(0.1),
                                keras.layers.ReLU(), keras.layers.Dense(2)])
    ks = keras_units(k_model)
    ts = [_t("fc1", "dense"), _t("act", "relu"), _t("extra", "tanh"), _t("fc2", "dense")]
    pairs, unpaired = pair_units(ts, ks)
    assert [(t.name, k.kind) for t, k in pairs] == [("fc1", "dense"), ("act", "relu"), ("fc2", "dense")]
    assert unpaired == ["torch extra (tanh)", f"keras {ks[1].name} (dropout)"]
    pairs, _ = pair_units(ts, ks, {"extra": ks[2].name})  # the user's own pairing wins
    assert ("extra", ks[2].name) in [(t.name, k.name) for t, k in pairs]
    with pytest.raises(PairError, match="no such layer: torch nope"):
        pair_units(ts, ks, {"nope": ks[0].name})


# ---- whole pairs


def test_a_correct_pair_passes_in_both_modes_and_writes_a_report(examples, tmp_path):
    ported_cnn, ported_lstm = examples
    result = _run(ported_cnn.pair(), report_dir=tmp_path)
    assert result.passed and set(result.first_divergence.values()) == {""}
    assert set(result.rows["case"].str.split("-").str[0]) == {"eval", "train"}
    assert {"out", "cot", "grad"} <= set(result.rows["kind"])
    assert (tmp_path / "report.html").is_file() and (tmp_path / "gradients.csv").is_file()
    assert _run(ported_lstm.pair()).passed


@pytest.mark.parametrize("position", [0, 1, 4, 7, 8])
def test_broken_on_purpose_a_fault_in_one_layer_is_named_there(examples, position):
    """One Keras layer's weights off by 1 % after a correct transfer: that layer is the first divergence."""
    ported_cnn, _ = examples
    p = ported_cnn.pair()
    compare_models(p.torch, p.keras, p.inputs, target=p.target, modes=["eval"])  # transfers the weights
    layer = p.keras.layers[position]
    layer.set_weights([w * 1.01 for w in layer.get_weights()])
    result = _run(p, weights="as_is", modes=["eval"])
    assert not result.passed
    index = 1 + [u.obj for u in keras_units(p.keras)].index(layer)
    assert result.first_divergence["eval"].startswith(f"{index}:"), (position, result.first_divergence)
    assert "forward" in result.first_divergence["eval"]


def test_the_defaults_that_differ_explain_the_divergence(examples):
    ported_cnn, ported_lstm = examples
    bn = _run(ported_cnn.mistaken(), modes=["train"])
    assert bn.first_divergence["train"].startswith("2:batch_norm (forward")
    assert bn.explanations["train"][0] == "BatchNorm2d eps=1e-05 vs BatchNormalization epsilon=0.001"
    assert any("momentum 0.1 vs 0.99" in e for e in bn.explanations["train"])
    flat = _run(ported_cnn.hand_copied(), weights="as_is", modes=["eval"])
    assert "Flatten of NCHW vs NHWC" in flat.explanations["eval"][0]
    assert "another order" in flat.rows.query("kind == 'weight' and status == 'fail'")["detail"].iloc[0]
    lstm = _run(ported_lstm.mistaken(), modes=["eval"])
    assert lstm.first_divergence["eval"].startswith("2:lstm (forward")
    assert "no mask reaches the Keras layer" in lstm.explanations["eval"][0]


@pytest.mark.parametrize("torch_layer, keras_layer, shape, words", [
    (lambda: torch.nn.GELU(), lambda: keras.layers.Activation(lambda x: keras.activations.gelu(x, approximate=True)),
     (3, 4), None),
    (lambda: torch.nn.LayerNorm(4), lambda: keras.layers.LayerNormalization(), (3, 4),
     "LayerNorm eps=1e-05 vs LayerNormalization epsilon=0.001"),
    (lambda: torch.nn.Conv2d(2, 2, 3, stride=2, padding=1),
     lambda: keras.layers.Conv2D(2, 3, strides=2, padding="same"),
     (1, 2, 6, 6), "padding=(1, 1) symmetric vs padding='same' (asymmetric for stride 2"),
])
def test_a_setting_that_differs_is_named(torch_layer, keras_layer, shape, words):
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch_layer())
    x = RNG.standard_normal(shape).astype("float32")
    keras_shape = shape[1:] if len(shape) < 4 else (shape[2], shape[3], shape[1])
    model = keras.Sequential([keras.Input(keras_shape), keras_layer()])
    if words is None:  # a lambda activation has no kind: not paired, and said so
        result = compare_models(module, model, x, loss="sum", modes=["eval"])
        assert result.unpaired and not result.passed
        return
    result = compare_models(module, model, x, loss="sum", modes=["eval"])
    assert not result.passed and any(words in e for e in result.explanations["eval"]), result.explanations


def test_training_steps_keep_a_correct_pair_together(examples):
    ported_cnn, _ = examples
    result = _run(ported_cnn.pair(), modes=["eval"], steps=3, optimizer="sgd", lr=0.05)
    assert [s["step"] for s in result.trajectory] == [1, 2, 3]
    assert all(s["within"] for s in result.trajectory), result.trajectory
    parted = _run(ported_cnn.mistaken(), modes=["eval"], steps=2, optimizer="adam", lr=0.01)
    assert not all(s["within"] for s in parted.trajectory), parted.trajectory


# ---- bad input: one line, exit status 2, no traceback


def _cli(tmp_path, spec, capsys, *more):
    (tmp_path / "bad_pairs.py").write_text(
        "import numpy as np, torch, keras\n"
        "from gradparity.adapters.pair import Pair\n"
        "def raises():\n    raise RuntimeError('no weights file')\n"
        "def wrong_type():\n    return {'torch': 1}\n"
        "def shapes():\n"
        "    return Pair(torch.nn.Sequential(torch.nn.Linear(4, 2)),\n"
        "                keras.Sequential([keras.Input((5,)), keras.layers.Dense(2)]), np.zeros((3, 4), 'float32'),\n"
        "                target=np.zeros(3, int))\n"
        "def not_a_module():\n"
        "    return Pair(object(), keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]), np.zeros((3, 4)))\n")
    sys.path.insert(0, str(tmp_path))
    try:
        code = cli(["pair", f"bad_pairs:{spec}", *more])
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("bad_pairs", None)
    err = capsys.readouterr().err
    return code, err


@pytest.mark.parametrize("spec, words", [
    ("raises", "raises() raised RuntimeError: no weights file"),
    ("wrong_type", "must return gradparity.adapters.pair.Pair, got dict"),
    ("shapes", "inputs[0] has shape (3, 4) (PyTorch's layout); the Keras model takes (None, 5)"),
    ("not_a_module", "must be a torch.nn.Module, got object"),
    ("missing", "bad_pairs has no callable 'missing'"),
])
def test_a_bad_pair_is_refused_in_one_line(tmp_path, capsys, spec, words):
    monkey_cwd = Path.cwd()
    code, err = _cli(tmp_path, spec, capsys)
    assert code == 2 and words in err and err.count("\n") == 1 and "Traceback" not in err, err
    assert Path.cwd() == monkey_cwd


def test_the_examples_run_from_the_command_line(tmp_path):
    def run(*args):
        return subprocess.run([sys.executable, "-m", "gradparity.reports.cli", "pair", *args], cwd=EXAMPLES,
                              capture_output=True, text=True, timeout=600)

    good = run("ported_cnn:pair", "--modes", "eval", "--report-dir", str(tmp_path / "good"))
    assert good.returncode == 0 and good.stdout.startswith("pass"), good.stdout + good.stderr[-2000:]
    bad = run("ported_cnn:mistaken", "--modes", "train")
    assert bad.returncode == 1 and "BatchNorm2d eps=1e-05 vs BatchNormalization epsilon=0.001" in bad.stdout
