"""What sending a run to TensorBoard and MLflow costs: the trackers' own time, per epoch and once.

    python scripts/tracker_cost.py [--config configs/default.yaml] [--epochs 10] [--json]

Trains the config for --epochs epochs in a temporary folder with both trackers (MLflow into a
SQLite file there, unless MLFLOW_TRACKING_URI says otherwise), timing every call the loop makes
to each tracker: per epoch (its scalars, and every fifth epoch the histograms) against the
epoch's own time, and the one-time costs of opening it and of its end (pictures, files, model).
Needs the tensorboard and mlflow extras, and MNIST (MNIST_MLP_MIRROR or `mlp download`).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path


class Timed:
    """A tracker whose every hook is timed."""

    def __init__(self, tracker):
        self.tracker, self.seconds = tracker, {}

    def __getattr__(self, name):
        method = getattr(self.tracker, name)
        if not name.startswith("on_"):
            return method

        def timed(*args):
            started = time.perf_counter()
            try:
                return method(*args)
            finally:
                self.seconds.setdefault(name, []).append(time.perf_counter() - started)

        return timed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/default.yaml")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from mnist_mlp import data, metrics, run, train
    from mnist_mlp.callbacks import Callback
    from mnist_mlp.config import load_config

    with tempfile.TemporaryDirectory() as tmp:
        config = load_config(args.config, [f"training.epochs={args.epochs}", f"output.dir={tmp}"])
        folder = Path(tmp) / "cost"
        d = data.for_config(config, progress=False)
        opened = {}
        trackers = []
        for name in ("tensorboard", "mlflow"):
            started = time.perf_counter()
            chosen = run.reporting_to(config, (name,))
            trackers += [Timed(t) for t in run.open_trackers(chosen, folder, d, print)]
            opened[name] = time.perf_counter() - started
        epochs: list[float] = []

        class Epochs(Callback):
            def on_epoch_end(self, state, row, is_best):
                epochs.append(row["seconds"])

        state = train.fit(config, d, callbacks=[Epochs(), *trackers], progress=False)
        probs = metrics.probabilities(state.params, config.model.activation, d.test.images)
        from mnist_mlp import checkpoint

        folder.mkdir(parents=True, exist_ok=True)
        checkpoint.save(folder / "checkpoint.npz", checkpoint.Checkpoint(state.params, config, {
            "input": {"scale": d.scaling[0], "offset": d.scaling[1]}}))  # fmt: skip
        finals = {"test/accuracy": float((probs.argmax(1) == d.test.labels).mean())}
        run.end_trackers(trackers, folder, d, probs, finals, checkpoint=True)
    epoch_s = statistics.median(epochs)
    result = {"epoch_s": epoch_s, "epochs": args.epochs, "trackers": {}}
    for name, t in zip(("tensorboard", "mlflow"), trackers):
        per_epoch = sum(t.seconds.get("on_epoch_end", [])) / args.epochs
        result["trackers"][name] = {
            "per_epoch_s": per_epoch,
            "share_of_epoch": per_epoch / epoch_s,
            "open_s": opened[name],
            "end_s": sum(t.seconds.get("on_run_end", [])),
        }
    both = sum(v["per_epoch_s"] for v in result["trackers"].values())
    result["both_share_of_epoch"] = both / epoch_s
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"an epoch of {args.config}: {epoch_s:.2f} s (median of {args.epochs})")
    for name, v in result["trackers"].items():
        print(
            f"{name:<12} {1000 * v['per_epoch_s']:6.1f} ms an epoch "
            f"({100 * v['share_of_epoch']:.1f}%), opening {v['open_s']:.2f} s, "
            f"the end {v['end_s']:.2f} s"
        )
    print(f"both trackers: {100 * result['both_share_of_epoch']:.1f}% of an epoch")
    return 0


if __name__ == "__main__":
    sys.exit(main())
