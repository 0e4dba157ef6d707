"""Export checkpoints to ONNX and compare onnxruntime with mnist_mlp on the whole test set.

    python scripts/onnx_vs_numpy.py runs/default/checkpoint.npz [more.npz ...] [--json]

For each checkpoint: labels that agree (of 10,000), the largest absolute difference of any
probability, and the time each takes for the 10,000 images (median of 5 runs, after one
warm-up; mlp's figure is its evaluation of the split, onnxruntime's one session.run on all
images, both on this machine's cores). Needs the export extra and onnxruntime (the dev extra).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np


def timed(fn, runs: int = 5) -> float:
    """Median seconds of ``runs`` calls, after one not counted."""
    from mnist_mlp.bench import median_time

    fn()
    return median_time(fn, runs)


def compare(path: str) -> dict:
    import onnxruntime as ort

    from mnist_mlp import checkpoint, data, export, metrics, model

    ckpt = checkpoint.load(path)
    data = data.for_config(ckpt.config, progress=False)
    images = data.test.images.reshape(-1, 28, 28).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = export.export(path, Path(tmp) / "model.onnx").path
        session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
        probs, labels = session.run(["probabilities", "label"], {"pixels": images})
        ort_s = timed(lambda: session.run(["probabilities", "label"], {"pixels": images}))
    ours = metrics.evaluate(ckpt.params, ckpt.activation, data.test, scaling=ckpt.scaling)
    ours_s = timed(
        lambda: metrics.evaluate(ckpt.params, ckpt.activation, data.test, scaling=ckpt.scaling)
    )
    return {
        "checkpoint": path,
        "architecture": "-".join(map(str, model.layer_sizes(ckpt.config.model.hidden))),
        "activation": ckpt.activation,
        "n": len(labels),
        "labels_equal": int(np.sum(labels == ours.predictions)),
        "max_abs_prob_diff": float(np.max(np.abs(probs - ours.probabilities))),
        "accuracy_mlp": ours.accuracy,
        "accuracy_onnx": float(np.mean(labels == data.test.labels)),
        "seconds_onnxruntime": ort_s,
        "seconds_mlp_eval": ours_s,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoints", nargs="+")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results = [compare(p) for p in args.checkpoints]
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(
        f"{'checkpoint':<40} {'net':<16} {'labels equal':>12} {'max |dp|':>9} {'acc':>7} "
        f"{'onnxruntime':>11} {'mlp eval':>9}"
    )
    for r in results:
        print(
            f"{r['checkpoint']:<40} {r['architecture'] + ' ' + r['activation']:<16} "
            f"{r['labels_equal']:>6}/{r['n']:<5} {r['max_abs_prob_diff']:9.1e} "
            f"{100 * r['accuracy_onnx']:6.2f}% "
            f"{r['seconds_onnxruntime']:10.3f}s {r['seconds_mlp_eval']:8.3f}s"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
