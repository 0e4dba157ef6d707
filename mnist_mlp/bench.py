"""``mlp bench``: speed and memory of this machine's training, measured against its own floor.

The floor is the time the network's matrix products alone would take at the float32 GEMM
throughput this machine reaches for those very shapes. An epoch of the 784-1024-10 net
costs ``n_train * flops_per_example`` (forward products, every weight gradient, and the
gradient of each hidden layer's input; none for the pixels), so

    ratio_to_floor = epoch seconds / (epoch FLOPs / GEMM throughput)

says how much time goes anywhere but the matrix products. With dense products 1.0 is the
limit; leaving out the pixel columns that are blank across a batch (``skip_blank_pixels``,
see :class:`mnist_mlp.fast.inked.InkedColumns`) does less work than the floor assumes, so the
ratio can go below 1. The epochs are timed on MNIST's own training digits when they are
cached (their blank pixels are what the skipping exploits), else on random pixels.

Training on distorted digits (``configs/augment.yaml``) adds the distortions' cost: the bench
times generating one epoch's distortions alone (with the compiled kernel and with its NumPy
definition) and an epoch of that training, whose batches are distorted in a background thread
while the previous one trains; ``augment_share`` is the first over the second.

Every figure is a median over repeats (the floor: the faster of two such measurements); the
machine is shared and noisy.
"""

from __future__ import annotations

import itertools
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from mnist_mlp import config as config_mod
from mnist_mlp import data as data_mod
from mnist_mlp import metrics, model, train
from mnist_mlp.augment import Augmenter
from mnist_mlp.callbacks import OnEpoch
from mnist_mlp.fast import kernels
from mnist_mlp.fast import step as fast_step

BATCHES = (32, 128, 512)
N_TRAIN = 55000  # MNIST's training set less the default validation split
# configs/augment.yaml's distortions (the file is not part of an installed package)
AUGMENT = {"rotate": 10, "scale": 0.1, "translate": 2, "elastic_alpha": 34, "elastic_sigma": 4}


def flops_per_example(sizes: list[int]) -> int:
    """Multiply-adds x 2 per training example: forward, weight gradients, hidden-input gradients."""
    pairs = list(itertools.pairwise(sizes))
    forward = sum(2 * a * b for a, b in pairs)
    weight_grads = forward
    input_grads = sum(2 * a * b for a, b in pairs[1:])  # none for the first layer: pixels
    return forward + weight_grads + input_grads


def median_time(fn, repeat: int) -> float:
    """Median seconds of ``repeat`` calls of ``fn``."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def gemm_gflops(batch: int, hidden: int = 1024, repeat: int = 50) -> float:
    """Throughput of the first layer's two products at ``batch``: forward X @ W and X.T @ dZ."""
    rng = np.random.default_rng(0)
    x = rng.random((batch, model.N_INPUTS), dtype=np.float32)
    w = rng.random((model.N_INPUTS, hidden), dtype=np.float32)
    dz = rng.random((batch, hidden), dtype=np.float32)
    h, g = np.empty((batch, hidden), np.float32), np.empty_like(w)

    def both():
        np.matmul(x, w, out=h)
        np.matmul(x.T, dz, out=g)

    for _ in range(5):
        both()
    return 2 * 2 * batch * model.N_INPUTS * hidden / median_time(both, repeat) / 1e9


def synthetic_data(n: int, seed: int = 0) -> data_mod.Data:
    """MNIST-shaped random data (no download needed)."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, model.N_INPUTS), dtype=np.uint8)
    labels = rng.integers(0, 10, n).astype(np.uint8)
    empty = data_mod.Split(images[:0], labels[:0])
    return data_mod.Data(
        "synthetic", tuple("0123456789"), "-", data_mod.Split(images, labels), empty, empty
    )


def mnist_or_synthetic(n: int) -> data_mod.Data:
    """The first ``n`` of MNIST's training digits (less the validation split) if cached, else random
    ones."""
    if load_seconds(repeat=1) is None:
        return synthetic_data(n)
    d = data_mod.load("mnist", progress=False)
    train_split = data_mod.Split(d.train.images[:n], d.train.labels[:n])
    empty = data_mod.Split(train_split.images[:0], train_split.labels[:0])
    return data_mod.Data(d.name, d.classes, d.digest, train_split, empty, empty, d.scaling)


def blank_share(images: np.ndarray, batch: int, seed: int = 0) -> tuple[float, float]:
    """Over one shuffled epoch: the mean share of pixel columns blank across a batch, and the
    share of batches that go in without them (those with at most fast_step.INKED_MAX inked)."""
    order = np.random.default_rng(seed).permutation(len(images))
    inked = (
        np.array(
            [
                np.count_nonzero(np.bitwise_or.reduce(images[order[i : i + batch]], axis=0))
                for i in range(0, len(order), batch)
            ]
        )
        / images.shape[1]
    )
    skipping = inked <= fast_step.INKED_MAX
    return float(np.mean(1 - inked[skipping])) if skipping.any() else 0.0, float(np.mean(skipping))


def epoch_seconds(batch: int, data: data_mod.Data, epochs: int, overrides=()) -> float:
    """Median seconds per epoch of the default config's training at ``batch`` (first epoch
    dropped)."""
    config = config_mod.load_config(
        overrides=[
            f"training.batch_size={batch}",
            f"training.epochs={epochs + 1}",
            "training.lr=0.001",
            "data.validation=0",
            *overrides,
        ]
    )
    augment = Augmenter(config.data.augment) if config.data.augment.enabled else None
    times = []
    train.fit(
        config,
        data,
        callbacks=[OnEpoch(lambda s, row, best: times.append(row["seconds"]))],
        progress=False,
        augment=augment,
    )
    return statistics.median(times[1:])


def augment_seconds(images: np.ndarray, compiled: bool, repeat: int = 3) -> float:
    """Median seconds to distort ``images`` (B, 784) once, in batches of 128, in this thread.

    ``compiled=False`` times the NumPy definition even where the kernel is built.
    """
    augmenter = Augmenter(config_mod.AugmentConfig(**AUGMENT))
    saved = kernels.WIDE
    kernels.WIDE = saved and compiled
    try:

        def epoch():
            for i in range(0, len(images), 128):
                augmenter(images[i : i + 128], np.random.default_rng(i))

        return median_time(epoch, repeat)
    finally:
        kernels.WIDE = saved


def eval_seconds(data: data_mod.Data, repeat: int = 5) -> float:
    config = config_mod.Config()
    params = train.new_state(config).params
    split = data_mod.Split(data.train.images[:10000], data.train.labels[:10000])
    metrics.evaluate(params, "relu", split)
    return median_time(lambda: metrics.evaluate(params, "relu", split), repeat)


def load_seconds(repeat: int = 3) -> float | None:
    """Seconds to load MNIST from the cache, verified; None if it is not cached."""
    from mnist_mlp import datasets, download

    folder = download.cache_root() / "mnist"
    if not all((folder / f"{r.key}.npy").exists() for r in datasets.DATASETS["mnist"].resources):
        return None
    return median_time(lambda: data_mod.load("mnist", progress=False), repeat)


def _mlp(*args: str) -> list[str]:
    return [sys.executable, "-m", "mnist_mlp", *args]


def help_seconds(repeat: int = 5) -> float:
    return median_time(
        lambda: subprocess.run(_mlp("--help"), capture_output=True, check=True), repeat
    )


def child_peak_mb(command: list[str]) -> float:
    """Run ``command``; its peak resident memory in MB. Raises RuntimeError if it fails.

    A child's ``ru_maxrss`` also counts the process it was forked from (at exec, Linux keeps
    the old address space's peak), and the caller may hold a lot of memory (the benchmark's
    data): a small Python process in between starts the command and reports its peak.
    """
    proc = subprocess.run(
        [sys.executable, "-c", _REPORT_PEAK, *command], capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:4])} ... failed: {proc.stderr.strip()[-300:]}")
    scale = 1024 if sys.platform != "darwin" else 1024 * 1024  # KiB on Linux, bytes on macOS
    return int(proc.stdout) / scale


_REPORT_PEAK = """
import resource, subprocess, sys
code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
sys.exit(code)
"""


def peak_rss_mb(config_path: Path | None, epochs: int = 1) -> float | None:
    """Peak resident memory (MB) of ``mlp train`` on the default config, as a child process.

    Runs ``epochs`` epochs (memory peaks in the first); None if MNIST is not cached.
    """
    if load_seconds(repeat=1) is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        args = [
            "train",
            "--quiet",
            "--out",
            str(Path(tmp) / "run"),
            "--set",
            f"training.epochs={epochs}",
            "--set",
            f"output.dir={tmp}",
        ]
        if config_path is not None:
            args += ["--config", str(config_path)]
        else:
            args += ["--set", "training.seed=0"]
        return child_peak_mb(_mlp(*args))


def torch_epoch_seconds(batch: int, data: data_mod.Data, epochs: int) -> float | None:
    """The same net and loop in PyTorch (if installed): median seconds per epoch."""
    try:
        import torch
    except ImportError:
        return None
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Linear(784, 1024), torch.nn.ReLU(), torch.nn.Linear(1024, 10)
    )
    opt = torch.optim.SGD(net.parameters(), lr=0.001, momentum=0.9, weight_decay=1e-4)
    images = torch.from_numpy(data.train.images)
    labels = torch.from_numpy(data.train.labels.astype(np.int64))
    n = len(labels)
    times = []
    for _epoch in range(epochs + 1):
        start = time.perf_counter()
        order = torch.randperm(n)
        for b in range(0, n, batch):
            idx = order[b : b + batch]
            x = images[idx].float().mul_(1 / 255)
            loss = torch.nn.functional.cross_entropy(net(x), labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def _batch_figures(batch: int, data: data_mod.Data, epochs: int, flops: float, n: int) -> dict:
    """Training at ``batch`` against the GEMM floor, with and without skipping blank pixels."""
    before = gemm_gflops(batch)
    seconds = epoch_seconds(batch, data, epochs)
    dense = epoch_seconds(batch, data, epochs, ["training.skip_blank_pixels=false"])
    # On a shared machine one measurement can catch a busy moment, and a low floor would
    # flatter the ratio: the floor is the faster of one measurement before and one after.
    gflops = max(before, gemm_gflops(batch))
    floor = flops / (gflops * 1e9)
    blank, batches_skipping = blank_share(data.train.images, batch)
    return {
        "gemm_gflops": gflops,
        "epoch_s": seconds,
        "floor_s": floor,
        "ratio_to_floor": seconds / floor,
        "samples_per_s": n / seconds,
        "dense_epoch_s": dense,
        "dense_ratio_to_floor": dense / floor,
        "blank_share": blank,
        "batches_skipping": batches_skipping,
    }


def _augment_figures(data: data_mod.Data, epochs: int) -> dict:
    """Generating the distortions alone (compiled and NumPy), and an epoch training on them."""
    out = {
        "augment_compiled": kernels.WIDE,
        "augment_s": augment_seconds(data.train.images, compiled=True),
        "augment_numpy_s": augment_seconds(data.train.images, compiled=False),
        "augmented_epoch_s": epoch_seconds(
            128, data, epochs, [f"data.augment.{k}={v}" for k, v in AUGMENT.items()]
        ),
    }
    out["augment_share"] = out["augment_s"] / out["augmented_epoch_s"]
    return out


def run(quick: bool = False, config_path: str | Path | None = None, log=lambda line: None) -> dict:
    """Measure everything; returns the figures (see the module docstring for their meaning).

    ``config_path``: the config whose training run measures peak memory
    (``configs/default.yaml`` where it is at hand, else the defaults).
    """
    if config_path is None and Path("configs/default.yaml").exists():
        config_path = "configs/default.yaml"
    config_path = Path(config_path) if config_path is not None else None
    sizes = model.layer_sizes(config_mod.Config().model.hidden)
    n = 10000 if quick else N_TRAIN
    epochs = 1 if quick else 3
    data = mnist_or_synthetic(n)
    flops = flops_per_example(sizes) * n
    result: dict = {
        "n_train": n,
        "quick": quick,
        "threads": os.cpu_count(),
        "kernels": kernels.AVAILABLE,
        "data": data.name,
        "epoch_gflop": flops / 1e9,
        "per_batch": {},
    }
    for batch in BATCHES:
        log(
            f"batch {batch}: GEMM throughput and {epochs} timed epochs, with and without skipping "
            "blank pixels ..."
        )
        result["per_batch"][batch] = _batch_figures(batch, data, epochs, flops, n)
    b128 = result["per_batch"][128]
    result.update(
        gemm_gflops=b128["gemm_gflops"],
        epoch_s=b128["epoch_s"],
        ratio_to_floor=b128["ratio_to_floor"],
        dense_epoch_s=b128["dense_epoch_s"],
    )
    if n != N_TRAIN:  # report full-epoch equivalents too
        result["epoch_s_full"] = b128["epoch_s"] * N_TRAIN / n
    log(f"distortions: one epoch's alone, and {epochs} timed epochs of training on them ...")
    result.update(_augment_figures(data, epochs))
    log("evaluation, cache load, start-up ...")
    result["eval_s"] = eval_seconds(synthetic_data(10000) if quick else data)
    result["load_s"] = load_seconds()
    result["help_s"] = help_seconds()
    log("peak memory of a training run ...")
    result["peak_rss_mb"] = peak_rss_mb(config_path)
    torch_s = torch_epoch_seconds(128, data, epochs)
    if torch_s is not None:
        result["torch_epoch_s"] = torch_s
        result["torch_ratio"] = torch_s / b128["epoch_s"]
    return result


def _batch_line(batch: int, p: dict) -> str:
    target = {128: "<= 1.0", 32: "<= 1.6"}.get(batch, "")
    skipped = (
        f"{100 * p['blank_share']:.0f}% of 784 in {100 * p['batches_skipping']:.0f}% of batches"
        if p["batches_skipping"]
        else "none (no batch blank enough)"
    )
    return (
        f"{batch:>5}  {p['gemm_gflops']:>12.1f}  {p['floor_s']:>7.2f}  {p['epoch_s']:>7.2f}  "
        f"{p['samples_per_s']:>9.0f}  {p['ratio_to_floor']:>5.2f}  {target:>7}   "
        f"{p['dense_epoch_s']:>7.2f}  {p['dense_ratio_to_floor']:>5.2f}   {skipped}"
    )


def _augment_lines(r: dict) -> list[str]:
    distorter = (
        "compiled kernel"
        if r.get("augment_compiled")
        else "NumPy: kernels off or not built, or no AVX2"
    )
    return [
        "",
        f"distortions (configs/augment.yaml's), one epoch of {r['n_train']} digits:",
        f"  generating them ({distorter})  {r['augment_s']:>6.2f} s   NumPy definition "
        f"{r['augment_numpy_s']:.2f} s",
        f"  an epoch training on them       {r['augmented_epoch_s']:>6.2f} s   "
        f"(batch 128; batches are distorted in a background thread)",
        f"  share spent generating          {100 * r['augment_share']:>5.0f} %    target <= 35 %",
    ]


def format_table(r: dict) -> str:
    """The figures as a readable table, with the targets they are judged by."""

    def fmt(value, unit="", digits=2):
        return "n/a" if value is None else f"{value:.{digits}f}{unit}"

    code = (
        "compiled kernels"
        if r["kernels"]
        else "NumPy only: the compiled kernels are off or not built"
    )
    source = (
        "MNIST training digits"
        if r.get("data") == "mnist"
        else "random MNIST-shaped images (MNIST not cached: no blank pixels to skip)"
    )
    lines = [
        f"mlp bench  ({r['n_train']} {source} per epoch, {r['epoch_gflop']:.0f} GFLOP of dense "
        "products; "
        f"{r['threads']} cores{', quick' if r['quick'] else ''}; {code})",
        "",
        f"{'batch':>5}  {'GEMM GFLOP/s':>12}  {'floor s':>7}  {'epoch s':>7}  {'samples/s':>9}  "
        f"{'ratio':>5}  {'target':>7}   {'dense s':>7}  {'ratio':>5}   blank columns skipped",
    ]
    lines += [_batch_line(int(batch), p) for batch, p in r["per_batch"].items()]
    lines.append(
        f"(decided per batch: a batch with more than {100 * fast_step.INKED_MAX:.0f}% of its "
        "columns inked "
        f"takes the dense products; dense s: training.skip_blank_pixels=false)"
    )
    if "augment_s" in r:
        lines += _augment_lines(r)
    lines += [
        "",
        f"evaluate 10,000 images   {fmt(r['eval_s'], ' s', 3):>9}   target <= 0.15 s",
        f"load MNIST from cache    {fmt(r['load_s'], ' s', 3):>9}   target <= 0.2 s"
        + ("" if r["load_s"] is not None else "  (not cached: run mlp download)"),
        f"mlp --help start-up      {fmt(r['help_s'], ' s', 3):>9}   target <= 0.3 s",
        f"peak RSS, default train  {fmt(r['peak_rss_mb'], ' MB', 0):>9}   target <= 300 MB"
        + ("" if r["peak_rss_mb"] is not None else "  (MNIST not cached)"),
    ]
    if "torch_epoch_s" in r:
        lines.append(
            f"PyTorch, same net/loop   {r['torch_epoch_s']:>7.2f} s   per epoch at batch 128: "
            f"{r['torch_ratio']:.2f}x our time"
        )
    return "\n".join(lines)
