"""mnist_mlp.MLPClassifier against scikit-learn's MLPClassifier on MNIST, on this machine.

    python scripts/estimator_vs_sklearn.py [--epochs 20] [--hidden 1024] [--json]

The same net (784-1024-10, ReLU), the same data (MNIST's 60,000 training digits, standardised),
minibatch SGD with classical momentum 0.9, batch 128, L2 5e-4, learning rate 0.05, 20 epochs, no
early stopping; scikit-learn's learning rate constant (it has no cosine schedule), ours cosine
as ``configs/default.yaml`` has it, and also constant, to compare like with like. Each run is
a process of its own, so that its peak memory (ru_maxrss) is its own; the runs alternate.
Prints seconds per epoch, peak memory and test accuracy of each.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

RUNS = ("ours-cosine", "sklearn", "ours-constant")


def one(kind: str, epochs: int, hidden: int) -> dict:
    import warnings

    import numpy as np

    import mnist_mlp

    (x_train, y_train), (x_test, y_test) = mnist_mlp.load_mnist(progress=False)
    common = dict(
        hidden_layer_sizes=(hidden,),
        alpha=5e-4,
        batch_size=128,
        learning_rate_init=0.05,
        momentum=0.9,
        nesterovs_momentum=False,
        max_iter=epochs,
        shuffle=True,
        random_state=0,
        tol=0.0,
        n_iter_no_change=epochs + 1,
    )
    if kind == "sklearn":
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.neural_network import MLPClassifier

        def standardise(x):
            return ((x.astype(np.float32) / 255 - 0.1307) / 0.3081).astype(np.float32)

        clf = MLPClassifier(solver="sgd", learning_rate="constant", **common)
        xs, xt = standardise(x_train), standardise(x_test)
        started = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf.fit(xs, y_train)
        seconds = time.perf_counter() - started
        accuracy = clf.score(xt, y_test)
    else:
        schedule = kind.split("-")[1]
        clf = mnist_mlp.MLPClassifier(schedule=schedule, **common)
        started = time.perf_counter()
        clf.fit(x_train, y_train)
        seconds = time.perf_counter() - started
        accuracy = clf.score(x_test, y_test)
    return {
        "run": kind,
        "epochs": clf.n_iter_,
        "seconds": seconds,
        "seconds_per_epoch": seconds / clf.n_iter_,
        "test_accuracy": accuracy,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--one", choices=RUNS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args.one, args.epochs, args.hidden)))
        return 0
    results = []
    for kind in RUNS:
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--one",
                kind,
                "--epochs",
                str(args.epochs),
                "--hidden",
                str(args.hidden),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(f"{'run':<15}{'epochs':>7}{'s/epoch':>9}{'peak MB':>9}{'test acc':>10}")
    for r in results:
        print(
            f"{r['run']:<15}{r['epochs']:>7}{r['seconds_per_epoch']:>9.2f}{r['peak_rss_mb']:>9.0f}"
            f"{100 * r['test_accuracy']:>9.2f}%"
        )
    sk = next(r for r in results if r["run"] == "sklearn")
    for r in results:
        if r["run"] != "sklearn":
            print(
                f"{r['run']}: {sk['seconds_per_epoch'] / r['seconds_per_epoch']:.2f}x faster per "
                "epoch than sklearn"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
