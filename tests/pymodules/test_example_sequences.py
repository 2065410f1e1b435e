import logging

import numpy as np

import pymodules as pm
from pymodules.examples import digits, sequences


def test_sequences_example_trains_an_lstm_and_a_gru(tmp_path, capsys, caplog):
    caplog.set_level(logging.INFO)
    accuracy = sequences.main(["--no-progress", "--out", str(tmp_path)])
    assert accuracy is not None  # None: a reloaded model's outputs differed
    assert set(accuracy) == {"LSTM", "GRU"}
    assert accuracy["LSTM"] >= 0.95
    assert accuracy["GRU"] >= 0.95
    assert (tmp_path / "sequences-curves.png").stat().st_size > 10_000
    out = capsys.readouterr().out
    assert "8 steps of 8 pixels" in out
    validations = [r for r in caplog.messages if "Top1Accuracy is Accuracy(" in r]
    assert len(validations) == 2 * 15  # every epoch of both models
    assert "LSTM: saved to" in out and "GRU: saved to" in out
    assert out.count("identical outputs: True") == 2
    test_x = digits.load_digits()[1][0]
    model = pm.load(tmp_path / "sequences-lstm.model")
    assert isinstance(model.modules[1], pm.Recurrent)
    assert isinstance(model.modules[1].modules[0], pm.LSTM)
    log_prob = model.predict(test_x[:3])
    assert log_prob.shape == (3, 10)
    np.testing.assert_allclose(np.exp(log_prob).sum(1), 1, rtol=1e-5)
