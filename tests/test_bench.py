"""mlp bench's arithmetic and table (its timings are measured, never asserted)."""

from __future__ import annotations

import json
import sys

import pytest
from click.testing import CliRunner

from mnist_mlp import bench
from mnist_mlp.cli import main


def test_epoch_flops_of_the_design_card_net():
    # 60,000 examples of 784-1024-10: forward and weight gradients of both layers, the hidden
    # layer's input gradient, no gradient for the pixels: about 196 GFLOP.
    per_example = bench.flops_per_example([784, 1024, 10])
    assert per_example == 2 * (2 * 784 * 1024 + 2 * 1024 * 10) + 2 * 1024 * 10
    assert 60000 * per_example / 1e9 == pytest.approx(196, abs=1)


def _result():
    per = {
        b: {
            "gemm_gflops": 150.0,
            "epoch_s": 1.5,
            "floor_s": 1.2,
            "ratio_to_floor": 1.25,
            "samples_per_s": 36000.0,
            "dense_epoch_s": 1.8,
            "dense_ratio_to_floor": 1.5,
            "blank_share": 0.33,
            "batches_skipping": 1.0,
        }
        for b in bench.BATCHES
    }
    return {
        "n_train": 55000,
        "quick": False,
        "threads": 2,
        "kernels": True,
        "epoch_gflop": 180.0,
        "per_batch": per,
        "gemm_gflops": 150.0,
        "epoch_s": 1.5,
        "ratio_to_floor": 1.25,
        "eval_s": 0.1,
        "load_s": None,
        "help_s": 0.1,
        "peak_rss_mb": 190.0,
        "augment_compiled": True,
        "augment_s": 0.5,
        "augment_numpy_s": 1.9,
        "augmented_epoch_s": 1.6,
        "augment_share": 0.5 / 1.6,
    }


def test_table_names_every_figure_and_target():
    table = bench.format_table(_result())
    for text in (
        "GEMM GFLOP/s",
        "<= 1.0",
        "<= 1.6",
        "dense s",
        "33% of 784 in 100% of batches",
        "decided per batch",
        "more than 80% of its columns inked",
        "evaluate 10,000 images",
        "<= 0.15 s",
        "load MNIST from cache",
        "not cached",
        "mlp --help",
        "peak RSS",
        "190 MB",
        "generating them (compiled kernel)    0.50 s",
        "NumPy definition 1.90 s",
        "31 %",
        "target <= 35 %",
    ):
        assert text in table
    assert "compiled kernels" in table
    assert "NumPy only" in bench.format_table({**_result(), "kernels": False})


def test_cli_json_is_the_result_alone(monkeypatch):
    monkeypatch.setattr(bench, "run", lambda **kwargs: _result())
    result = CliRunner().invoke(main, ["bench", "--json"])
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert {
        "gemm_gflops",
        "epoch_s",
        "ratio_to_floor",
        "eval_s",
        "load_s",
        "peak_rss_mb",
        "help_s",
        "augment_s",
        "augmented_epoch_s",
        "augment_share",
    } <= set(data)


def test_child_peak_memory_is_the_childs_own_not_its_parents():
    ballast = bytearray(300 * 2**20)  # touched pages: this process now holds 300 MB more
    ballast[::4096] = b"x" * len(ballast[::4096])
    child = [sys.executable, "-c", "b = bytearray(60 * 2**20); b[::4096] = b'x' * len(b[::4096])"]
    assert 60 < bench.child_peak_mb(child) < 200
    with pytest.raises(RuntimeError, match="failed"):
        bench.child_peak_mb([sys.executable, "-c", "raise SystemExit(3)"])


def test_blank_share_counts_columns_blank_across_each_batch():
    import numpy as np

    images = np.zeros((256, 784), np.uint8)
    images[:, :392] = 1  # half the columns inked in every image
    assert bench.blank_share(images, 128) == (0.5, 1.0)
    images[0, 392:] = 1  # one batch of the two has every column inked: it goes the dense way
    assert bench.blank_share(images, 128) == (0.5, 0.5)


def test_distortion_timing_puts_the_kernel_switch_back():
    import numpy as np

    from mnist_mlp.fast import kernels

    before = kernels.WIDE
    images = np.random.default_rng(0).integers(0, 256, (130, 784), dtype=np.uint8)
    assert bench.augment_seconds(images, compiled=False, repeat=1) > 0
    assert before == kernels.WIDE
