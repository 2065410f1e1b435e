"""Train an MLP and a LeNet-style conv net on scikit-learn's digits (8x8 images, 10 classes).

The dataset ships with scikit-learn: nothing is downloaded. Run

    python -m pymodules.examples.digits [--epochs 30] [--out digits-out] [--no-progress]
    python -m pymodules.examples.digits --keras [--epochs 20] [--out digits-out]

It trains both models with the Optimizer (progress bar and log lines), validates every
epoch with Top1Accuracy and Loss, predicts classes, saves and reloads the conv net and
writes the loss and accuracy curves to a PNG (matplotlib), both in the ``--out`` folder.
With ``--keras`` it trains the MLP written with the Keras-style API (pymodules.keras:
compile, fit, evaluate) instead. Either way the training and validation summaries
(TrainSummary, ValidationSummary) go to ``--out``, one folder per model, for TensorBoard:
``tensorboard --logdir digits-out``.
Needs the extras: ``pip install pymodules[examples,progress]``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

import numpy as np

import pymodules as pm


def load_digits(seed=0):
    """(train, test) pairs of images (n, 1, 8, 8) in [0, 1] and 0-based labels."""
    try:
        from sklearn.datasets import load_digits as sk_load
        from sklearn.model_selection import train_test_split
    except ImportError:
        sys.exit("this example needs scikit-learn: pip install pymodules[examples]")
    digits = sk_load()
    x = (digits.images / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
    y = digits.target.astype(np.int64)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.25, random_state=seed, stratify=y)
    return (xtr, ytr), (xte, yte)


def mlp():
    """64 -> 128 -> 64 -> 10 with ReLU, on flattened images."""
    return (pm.Sequential()
            .add(pm.Reshape([64]))
            .add(pm.Linear(64, 128)).add(pm.ReLU())
            .add(pm.Linear(128, 64)).add(pm.ReLU())
            .add(pm.Linear(64, 10)).add(pm.LogSoftMax()))


def lenet():
    """Two 3x3 convolutions with 2x2 max pooling, then two fully connected layers."""
    return (pm.Sequential()
            .add(pm.SpatialConvolution(1, 16, 3, 3, 1, 1, 1, 1)).add(pm.ReLU())
            .add(pm.SpatialMaxPooling(2, 2, 2, 2))                      # 16 x 4 x 4
            .add(pm.SpatialConvolution(16, 32, 3, 3, 1, 1, 1, 1)).add(pm.ReLU())
            .add(pm.SpatialMaxPooling(2, 2, 2, 2))                      # 32 x 2 x 2
            .add(pm.Reshape([128]))
            .add(pm.Linear(128, 64)).add(pm.ReLU())
            .add(pm.Linear(64, 10)).add(pm.LogSoftMax()))


def keras_mlp():
    """The MLP in the Keras-style API: 64 -> 128 -> 64 -> 10, softmax output."""
    from pymodules.keras import Dense, Flatten, Sequential

    model = Sequential(name="keras-mlp")
    model.add(Flatten(input_shape=(1, 8, 8)))
    model.add(Dense(128, activation="relu"))
    model.add(Dense(64, activation="relu"))
    model.add(Dense(10, activation="softmax"))
    return model


def train_keras(train_xy, test_xy, epochs, batch, out_dir):
    """Compile and fit the Keras-style MLP; return its test accuracy and its summaries."""
    model = keras_mlp()
    print("\n== Keras MLP")
    model.summary()
    model.compile(pm.SGD(learningRate=0.05, momentum=0.9, dampening=0.0),
                  "sparse_categorical_crossentropy", ["accuracy"])
    model.set_tensorboard(out_dir, "keras-mlp")
    model.fit(*train_xy, batch_size=batch, nb_epoch=epochs, validation_data=test_xy)
    loss, acc = model.evaluate(*test_xy)
    classes = model.predict_classes(test_xy[0])
    print(f"Keras MLP: test loss {loss:.4f}, accuracy {acc:.4f}")
    print(f"Keras MLP: first predictions {classes[:10].tolist()} "
          f"(labels {test_xy[1][:10].tolist()})")
    return acc, (model.get_train_summary(), model.get_validation_summary())


def train(name, model, train_set, test_set, epochs, batch, method, progress, out_dir=None):
    """Train ``model``; return it with its train and validation summaries (written under
    ``out_dir``/``name`` when given)."""
    print(f"\n== {name}: {model}")
    app = name.lower()
    train_summary = pm.TrainSummary(out_dir, app) if out_dir else pm.TrainSummary()
    val_summary = pm.ValidationSummary(out_dir, app) if out_dir else pm.ValidationSummary()
    optimizer = pm.Optimizer(model, train_set, pm.ClassNLLCriterion(), method,
                             pm.MaxEpoch(epochs), batch)
    optimizer.setValidation(pm.EveryEpoch(), test_set, [pm.Top1Accuracy(), pm.Loss()])
    optimizer.setTrainSummary(train_summary).setValidationSummary(val_summary)
    optimizer.setProgressBar(progress).setLogInterval(100)
    optimizer.optimize()
    return model, train_summary, val_summary


def report(name, model, test_set):
    """Evaluate with Top1Accuracy and Loss, predict classes; return the accuracy."""
    (acc, _), (loss, _) = model.evaluate(test_set, [pm.Top1Accuracy(), pm.Loss()])
    classes = model.predictClass(test_set[0])
    agree = float((classes == test_set[1]).mean())
    print(f"{name}: test {acc}, {loss}")
    print(f"{name}: first predictions {classes[:10].tolist()} "
          f"(labels {test_set[1][:10].tolist()}), predictClass accuracy {agree:.4f}")
    return acc.result()[0]


def save_and_reload(model, test_x, out_dir):
    path = os.path.join(out_dir, "digits-lenet.model")
    model.save(path, overWrite=True)
    again = pm.load(path)
    same = np.array_equal(again.predict(test_x), model.predict(test_x))
    print(f"saved to {path} and reloaded: identical predictions: {same}")
    return again


def plot(curves, path):
    """Training loss and validation accuracy per model, one PNG."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot (pip install pymodules[examples])")
        return None
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    for name, (ts, vs) in curves.items():
        loss = np.asarray(ts.readScalar("Loss"), dtype=np.float64).reshape(-1, 3)
        ax_loss.plot(loss[:, 0], loss[:, 1], label=name, alpha=0.8)
        acc = np.asarray(vs.readScalar("Top1Accuracy"), dtype=np.float64).reshape(-1, 3)
        ax_acc.plot(acc[:, 0], acc[:, 1], marker="o", ms=3, label=name)
    ax_loss.set(xlabel="iteration", ylabel="training loss (ClassNLL)", yscale="log")
    ax_acc.set(xlabel="iteration", ylabel="test Top1Accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"curves written to {path}")
    return path


def close(curves):
    """Close the summaries' files (where the summary class has a close)."""
    for summaries in curves.values():
        for s in summaries:
            if callable(getattr(s, "close", None)):
                s.close()


def main(argv=None):
    """Run the example; the test accuracy of each model trained, by name."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=None,
                        help="epochs (default 30; 20 with --keras)")
    parser.add_argument("--keras", action="store_true",
                        help="train the MLP written with the Keras-style API instead")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", default="digits-out", help="folder for the model and the PNG")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    out_dir = args.out
    os.makedirs(out_dir, exist_ok=True)
    pm.setSeed(args.seed)
    (xtr, ytr), (xte, yte) = load_digits()
    train_set, test_set = pm.DataSet.array(xtr, ytr), (xte, yte)
    print(f"digits: {len(xtr)} training and {len(xte)} test images of 8x8, 10 classes")

    curves, accuracy = {}, {}
    if args.keras:
        epochs = 20 if args.epochs is None else args.epochs
        accuracy["Keras MLP"], curves["Keras MLP"] = train_keras(
            (xtr, ytr), (xte, yte), epochs, args.batch, out_dir)
        plot(curves, os.path.join(out_dir, "digits-keras-curves.png"))
        close(curves)
        print(f"\nKeras MLP: {accuracy['Keras MLP']:.2%} test accuracy")
        return accuracy
    epochs = 30 if args.epochs is None else args.epochs
    for name, build, method in (
            ("MLP", mlp, pm.SGD(learningRate=0.05, momentum=0.9, dampening=0.0)),
            ("LeNet", lenet, pm.SGD(learningRate=0.05, momentum=0.9, dampening=0.0))):
        model, ts, vs = train(name, build(), train_set, test_set, epochs, args.batch,
                              method, not args.no_progress, out_dir)
        curves[name] = (ts, vs)
        accuracy[name] = report(name, model, test_set)
        if name == "LeNet":
            save_and_reload(model, xte, out_dir)
    plot(curves, os.path.join(out_dir, "digits-curves.png"))
    close(curves)
    print("\n" + ", ".join(f"{k}: {v:.2%}" for k, v in accuracy.items()) + " test accuracy")
    return accuracy


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
