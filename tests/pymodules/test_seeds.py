"""Each Optimizer, DataSet and dropout layer draws from a generator of its own, derived from
the global seed when it is created: the same program gives the same weights, whatever else
runs, in this thread or in another."""

import subprocess
import sys
import textwrap
import threading

import numpy as np

import pymodules as pm
from pymodules.random import Stream


def _data(seed, n=96):
    r = np.random.default_rng(seed)
    return r.standard_normal((n, 8)).astype(np.float32), r.integers(0, 3, n)


def _two_runs(seed=11):
    """Two models and their Optimizers (dropout, shuffling), built in one order."""
    pm.setSeed(seed)
    runs = []
    for k in range(2):
        model = pm.Sequential().add(pm.Linear(8, 16)).add(pm.Dropout(0.3)) \
            .add(pm.ReLU()).add(pm.Linear(16, 3))
        opt = pm.Optimizer(model, _data(k), pm.CrossEntropyCriterion(), pm.SGD(0.1),
                           pm.MaxEpoch(6), 4).setProgressBar(False).setLogInterval(0)
        runs.append((model, opt))
    return runs


def _weights(runs):
    return [m.getParameters()[0].copy() for m, _ in runs]


def test_two_optimizers_in_two_threads_give_the_weights_of_one_after_the_other():
    runs = _two_runs()
    for _, opt in runs:
        opt.optimize()
    serial = _weights(runs)

    runs = _two_runs()
    for _, opt in reversed(runs):  # the other order
        opt.optimize()
    for a, b in zip(serial, _weights(runs), strict=True):
        np.testing.assert_array_equal(a, b)

    for _ in range(2):
        runs = _two_runs()
        threads = [threading.Thread(target=opt.optimize) for _, opt in runs]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        for a, b in zip(serial, _weights(runs), strict=True):
            np.testing.assert_array_equal(a, b)


def test_what_runs_in_between_changes_nothing():
    runs = _two_runs()
    runs[0][1].optimize()
    expected = _weights(runs)[0]
    runs = _two_runs()
    # other draws of every kind between creation and training
    pm.random.generator().random(100)
    pm.Dropout(0.5).forward(np.ones((4, 4), np.float32))
    ds = pm.DataSet.array(*_data(5))
    list(ds.batches(8, shuffle=True))
    runs[1][1].optimize()
    runs[0][1].optimize()
    np.testing.assert_array_equal(_weights(runs)[0], expected)


_PROGRAM = textwrap.dedent("""
    import threading, hashlib
    import numpy as np
    import pymodules as pm
    pm.setSeed(3)
    r = np.random.default_rng(0)
    opts = []
    for k in range(3):
        x, y = r.standard_normal((64, 8)).astype(np.float32), r.integers(0, 3, 64)
        model = pm.Sequential().add(pm.Linear(8, 16)).add(pm.Dropout(0.3)).add(pm.ReLU()) \\
            .add(pm.Linear(16, 3))
        opts.append(pm.Optimizer(model, pm.DataSet.array(x, y), pm.CrossEntropyCriterion(),
                                 pm.SGD(0.1), pm.MaxEpoch(5), 2).setProgressBar(False)
                    .setLogInterval(0))
    threads = [threading.Thread(target=o.optimize) for o in opts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(hashlib.sha256(b"".join(o.model.getParameters()[0].tobytes() for o in opts))
          .hexdigest())
""")


def test_a_program_run_twice_gives_the_same_weights():
    outs = [subprocess.run([sys.executable, "-c", _PROGRAM], capture_output=True, text=True,
                           timeout=120, check=True).stdout for _ in range(2)]
    assert outs[0] == outs[1] and len(outs[0].strip()) == 64


def test_dropout_masks_depend_on_the_seed_and_the_order_of_construction_only():
    x = np.ones((64, 64), np.float32)

    def masks(disturb):
        pm.setSeed(4)
        a, b = pm.Dropout(0.5), pm.Dropout(0.5)
        if disturb:
            pm.Dropout(0.5).forward(x)  # another layer, made later, draws first
            pm.random.generator().random(10)
        return [b.forward(x).copy(), a.forward(x).copy(), a.forward(x).copy()]

    quiet, busy = masks(False), masks(True)
    for m, n in zip(quiet, busy, strict=True):
        np.testing.assert_array_equal(m, n)
    assert not np.array_equal(quiet[0], quiet[1])  # two layers, two streams
    assert not np.array_equal(quiet[1], quiet[2])  # a fresh mask each forward


def test_copies_draw_streams_of_their_own():
    x = np.ones((32, 32), np.float32)
    pm.setSeed(8)
    d = pm.Dropout(0.5)
    c1, c2 = d.cloneModule(), d.cloneModule()
    outs = [m.forward(x).copy() for m in (d, c1, c2)]
    assert not np.array_equal(outs[0], outs[1]) and not np.array_equal(outs[1], outs[2])
    pm.setSeed(8)
    d = pm.Dropout(0.5)
    again = [m.forward(x).copy() for m in (d, d.cloneModule(), d.cloneModule())]
    for m, n in zip(outs, again, strict=True):
        np.testing.assert_array_equal(m, n)
    # MapTable runs clones: each entry its own mask
    table = pm.MapTable(pm.Dropout(0.5))
    a, b = table.forward([x, x])
    assert not np.array_equal(a, b)


def test_set_seed_after_creation_restarts_the_streams():
    ds = pm.DataSet.array(*_data(1, n=20))
    d = pm.Dropout(0.5)
    x = np.ones((16, 16), np.float32)

    def draws():
        return ([b.getTarget().tolist() for b in ds.batches(5, shuffle=True)],
                d.forward(x).copy())

    pm.setSeed(2)
    first = draws()
    pm.setSeed(2)
    again = draws()
    assert first[0] == again[0]
    np.testing.assert_array_equal(first[1], again[1])
    assert Stream().generator.random() != Stream().generator.random()


def test_a_resumed_run_with_dropout_continues_exactly(tmp_path):
    def setup(seed):
        pm.setSeed(seed)
        model = pm.Sequential().add(pm.Linear(8, 16)).add(pm.Dropout(0.4)) \
            .add(pm.Linear(16, 3))
        opt = pm.Optimizer(model, _data(0, n=40), pm.CrossEntropyCriterion(),
                           pm.SGD(0.1, momentum=0.9), pm.MaxIteration(11), 16)
        return model, opt.setProgressBar(False).setLogInterval(0)

    model, opt = setup(0)
    opt.setCheckpoint(str(tmp_path), pm.SeveralIteration(2)).optimize()
    expected = model.getParameters()[0].copy()
    for at in (4, 6):
        resumed, opt2 = setup(99)
        opt2.loadCheckpoint(str(tmp_path), at).optimize()
        np.testing.assert_array_equal(resumed.getParameters()[0], expected)


def test_evaluate_and_predict_take_no_stream():
    pm.setSeed(6)
    expected = Stream().generator.random(3)
    pm.setSeed(6)
    m = pm.Linear(8, 3)
    x, y = _data(0, n=10)
    m.predict(x)
    m.evaluate((x, y), [pm.Top1Accuracy()])
    m.training()
    np.testing.assert_array_equal(Stream().generator.random(3), expected)


def test_the_spark_data_order_seed_does_not_depend_on_initialisation():
    """The seed of the distributed data order comes from a stream of its own: building a
    model between setSeed and the Optimizer (drawing from the initialisation generator)
    does not change it."""
    from pymodules.spark import DistributedGradient

    class Rdd:
        def getNumPartitions(self):
            return 2

    pm.setSeed(7)
    alone = DistributedGradient(Rdd(), 4).seed
    pm.setSeed(7)
    pm.Linear(50, 50)
    assert DistributedGradient(Rdd(), 4).seed == alone
    pm.setSeed(8)
    assert DistributedGradient(Rdd(), 4).seed != alone
