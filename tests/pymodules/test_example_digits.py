import pymodules as pm
from pymodules.examples import digits


def test_digits_example_trains_both_models(tmp_path, capsys):
    accuracy = digits.main(["--epochs", "16", "--no-progress", "--out", str(tmp_path)])
    assert set(accuracy) == {"MLP", "LeNet"}
    assert accuracy["LeNet"] >= 0.97
    assert accuracy["MLP"] >= 0.9
    assert (tmp_path / "digits-curves.png").stat().st_size > 10_000
    out = capsys.readouterr().out
    assert "LeNet: test Accuracy(correct:" in out and "first predictions" in out
    assert "identical predictions: True" in out
    assert pm.load(tmp_path / "digits-lenet.model").predictClass(digits.load_digits()[1][0]) \
        .shape == (450,)


def test_digits_example_keras_variant(tmp_path, capsys):
    accuracy = digits.main(["--keras", "--no-progress", "--out", str(tmp_path)])
    assert set(accuracy) == {"Keras MLP"}
    assert accuracy["Keras MLP"] >= 0.97  # within the default 20 epochs
    out = capsys.readouterr().out
    assert "Total params: 17,226" in out  # 64*128+128 + 128*64+64 + 64*10+10
    assert "Keras MLP: test loss" in out and "first predictions" in out
    assert (tmp_path / "digits-keras-curves.png").stat().st_size > 10_000
    assert (tmp_path / "keras-mlp").is_dir()  # the summaries, for TensorBoard
