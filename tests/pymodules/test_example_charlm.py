import numpy as np

import pymodules as pm
from pymodules.examples import charlm


def test_charlm_example_trains_generates_and_reloads(tmp_path, capsys):
    result = charlm.main(["--epochs", "3", "--hidden", "16", "--heads", "2", "--layers", "1",
                          "--length", "12", "--sample", "20", "--out", str(tmp_path)])
    assert result is not None  # None: the reloaded model's outputs differed
    losses, sample = result
    assert len(losses) == 3 and losses[-1] < losses[0]
    assert sample.startswith("Four score") and len(sample) == len("Four score") + 20
    _, alphabet = charlm.load_text()
    assert set(sample) <= set(alphabet)
    out = capsys.readouterr().out
    assert "gettysburg.txt: 1473 characters" in out
    assert out.count("  epoch ") == 3
    assert "identical outputs: True" in out
    model = pm.load(tmp_path / "charlm.model")
    assert isinstance(model.modules[0], pm.Transformer)
    log_prob = model.predict(np.zeros((2, 12)))
    assert log_prob.shape == (2, 12, len(alphabet))
    np.testing.assert_allclose(np.exp(log_prob).sum(-1), 1, rtol=1e-4)
