"""The mlp command: thin commands, one-line errors, JSON on stdout only."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from mnist_mlp import __version__
from mnist_mlp.cli import main

ROOT = Path(__file__).resolve().parent.parent
TINY = [
    "--set",
    "data.validation=16",
    "--set",
    "model.hidden=[32]",
    "--set",
    "training.epochs=2",
    "--set",
    "training.batch_size=8",
]


def invoke(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def assert_one_line_error(result, *fragments):
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0]


def test_version_and_help():
    assert __version__ in invoke("--version").output
    result = invoke("--help")
    assert result.exit_code == 0
    for command in ("download", "train", "eval", "bench"):
        assert command in result.output


def test_download_prints_each_split(tiny_as_mnist):
    result = invoke("download", "--quiet")
    assert result.exit_code == 0
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 4
    assert (
        "train-images" in lines[0] and "(64, 28, 28)" in lines[0] and "downloaded from" in lines[0]
    )
    assert "cached, from" in invoke("download", "--quiet").stdout


@pytest.mark.realdata
def test_download_all_fetches_every_dataset(real_env):
    result = invoke("download", "--dataset", "all", "--quiet")
    assert result.exit_code == 0, result.output
    names = [line.split()[0] for line in result.stdout.strip().splitlines()]
    assert names == ["mnist"] * 4 + ["fashion-mnist"] * 4


def test_download_failure_is_one_line(tiny_as_mnist, tmp_path, monkeypatch):
    monkeypatch.setenv("MNIST_MLP_MIRROR", str(tmp_path / "empty"))
    assert_one_line_error(
        invoke("download", "--quiet"),
        "could not get mnist/train-images-idx3-ubyte.gz",
        "No such file",
    )


def test_train_then_eval_json(tiny_as_mnist, tmp_path):
    result = invoke("train", "--quiet", "--out", "runs/t", *TINY)
    assert result.exit_code == 0, result.output
    assert result.stdout == ""  # --quiet
    result = invoke("eval", "runs/t/checkpoint.npz", "--json")
    assert result.exit_code == 0
    report = json.loads(result.stdout)  # stdout holds the JSON document and nothing else
    assert {"accuracy", "loss", "n", "per_class", "confusion_matrix"} <= set(report)
    assert report["n"] == 32 and 0 <= report["accuracy"] <= 1
    table = invoke("eval", "runs/latest/checkpoint.npz").stdout
    assert "accuracy" in table and "confusion matrix" in table and "precision" in table


def test_eval_and_predict_a_committee(tiny_as_mnist, tmp_path):
    import imagegen

    for seed in (0, 1):
        invoke(
            "train", "--quiet", "--out", f"runs/s{seed}", *TINY, "--set", f"training.seed={seed}"
        )
    report = json.loads(
        invoke("eval", "runs/s0/checkpoint.npz", "runs/s1/checkpoint.npz", "--json").stdout
    )
    assert len(report["members"]) == 2 and report["n"] == 32 and 0 <= report["accuracy"] <= 1
    table = invoke("eval", "runs/s0/checkpoint.npz", "runs/s1/checkpoint.npz").stdout
    assert (
        table.startswith("a committee of 2 on mnist test")
        and "member runs/s1/checkpoint.npz" in table
    )
    imagegen.drawn(3, 20, canvas=200).save("three.png")
    result = invoke(
        "predict",
        "three.png",
        "-c",
        "runs/s0/checkpoint.npz",
        "-c",
        "runs/s1/checkpoint.npz",
        "--json",
    )
    assert result.exit_code == 0 and json.loads(result.stdout)[0]["file"] == "three.png"


def test_train_prints_epochs_and_result(tiny_as_mnist):
    result = invoke("train", "--out", "runs/t", *TINY)
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith("epoch 1/2") and "val loss" in lines[0]
    assert lines[-1].startswith("best epoch") and "test accuracy" in lines[-1]


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["train"], ["give --config PATH"]),
        (["train", "--config", "nope.yaml"], ["cannot read config nope.yaml"]),
        (["train", "--set", "training.lr=-1"], ["training.lr must be > 0, got -1.0"]),
        (
            ["train", "--set", "training.lrr=1"],
            ["unknown key 'training.lrr' (did you mean 'training.lr'?)"],
        ),
        (["eval", "missing.npz"], ["checkpoint missing.npz not found"]),
        (["eval", "notes.txt"], ["not a valid checkpoint"]),
        (["train", "--resume", "missing.npz"], ["checkpoint missing.npz not found"]),
    ],
)
def test_user_mistakes_are_one_line(tiny_as_mnist, args, fragments):
    Path("notes.txt").write_text("hello")
    result = CliRunner().invoke(main, args)
    if "give --config PATH" in fragments[0]:  # a usage error: click's own two-line format, exit 2
        assert result.exit_code == 2 and fragments[0] in result.stderr
        return
    assert_one_line_error(result, *fragments)


def test_bad_config_file(tiny_as_mnist, tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model:\n  activation: gelu\n")
    assert_one_line_error(
        invoke("train", "--config", str(path)),
        "model.activation must be one of relu, sigmoid, tanh, got 'gelu'",
    )


def test_export_writes_onnx_and_says_what(tiny_as_mnist):
    pytest.importorskip("onnx", reason="the export extra (onnx) is not installed")
    invoke("train", "--quiet", "--out", "runs/t", *TINY)
    result = invoke("export", "runs/t/checkpoint.npz", "--opset", "13")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(
        "wrote runs/t/checkpoint.onnx (784-32-10 net, input pixels (N, 28, 28), "
        "ONNX opset 13, IR version 7,"
    )
    assert Path("runs/t/checkpoint.onnx").stat().st_size > 784 * 32 * 4
    assert_one_line_error(
        CliRunner().invoke(main, ["export", "runs/t/checkpoint.npz", "--opset", "5"]),
        "--opset must be in [13,",
    )


def test_export_without_the_extra_says_how_to_install_it(tiny_as_mnist, monkeypatch):
    invoke("train", "--quiet", "--out", "runs/t", *TINY)
    monkeypatch.setitem(sys.modules, "onnx", None)  # as if not installed: import raises ImportError
    assert_one_line_error(
        CliRunner().invoke(main, ["export", "runs/t/checkpoint.npz"]),
        "pip install 'mnist-mlp[export]'",
    )
    assert not Path("runs/t/checkpoint.onnx").exists()


# --- on the real data --------------------------------------------------------------------------


@pytest.mark.realdata
def test_smoke_config_on_real_mnist(real_env, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = invoke("train", "--config", str(ROOT / "configs" / "smoke.yaml"), "--quiet")
    assert result.exit_code == 0, result.output
    report = json.loads(invoke("eval", "runs/smoke/checkpoint.npz", "--json").stdout)
    assert report["n"] == 10000
    assert report["accuracy"] >= 0.95


@pytest.mark.realdata
def test_ctrl_c_saves_and_resume_finishes(real_env, tmp_path):
    env = {**os.environ, "MNIST_MLP_HOME": str(real_env)}
    cmd = [
        sys.executable,
        "-m",
        "mnist_mlp",
        "train",
        "--config",
        str(ROOT / "configs" / "smoke.yaml"),
        "--out",
        str(tmp_path / "run"),
        "--set",
        "training.epochs=3",
    ]
    proc = subprocess.Popen(
        cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    first = proc.stdout.readline()  # the first epoch's line: training is under way
    assert first.startswith("epoch 1/3"), first
    time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert f"Resume with: mlp train --resume {tmp_path / 'run' / 'last.npz'}" in err
    resumed = subprocess.run(
        [
            sys.executable,
            "-m",
            "mnist_mlp",
            "train",
            "--resume",
            str(tmp_path / "run" / "last.npz"),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stdout and "test accuracy" in resumed.stdout
    assert "epoch 3/3" in resumed.stdout
