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
