"""Runs sent to TensorBoard and MLflow, read back with their own readers (EventAccumulator,
MlflowClient, mlflow.pyfunc), a real MLflow server on loopback included, through its outage."""

from __future__ import annotations

import csv
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import TINY_RUN

from mnist_mlp import evaluation, run
from mnist_mlp.callbacks import Callback
from mnist_mlp.config import load_config
from mnist_mlp.errors import MlpError

TINY = TINY_RUN
TAGS = {
    "train_loss": "train/loss",
    "train_acc": "train/accuracy",
    "val_loss": "val/loss",
    "val_acc": "val/accuracy",
    "lr": "lr",
    "seconds": "time/epoch_s",
}


def config(*extra):
    return load_config(overrides=[*TINY, *extra])


def rows_of(folder: Path) -> list[dict]:
    return list(csv.DictReader((folder / "metrics.csv").read_text().splitlines()))


@pytest.fixture
def no_tracking_uri(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)


# --- TensorBoard --------------------------------------------------------------------------------


def test_tensorboard_holds_the_epochs_histograms_pictures_and_hparams(tiny_as_mnist, tmp_path):
    pytest.importorskip("tensorboardX")
    accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    folder = tmp_path / "runs" / "tb"
    run.train_run(config(), folder, progress=False, echo=lambda s: None, report_to=("tensorboard",))
    logdir = folder / "tensorboard"
    # one event file, and no timestamped run folder beside it (as add_hparams would make)
    assert [p.is_file() for p in logdir.iterdir()] == [True]
    events = accumulator.EventAccumulator(
        str(logdir), size_guidance={"scalars": 0, "histograms": 0, "images": 0}
    )
    events.Reload()
    for row in rows_of(folder):
        epoch = int(row["epoch"])
        for column, tag in TAGS.items():
            (value,) = [e.value for e in events.Scalars(tag) if e.step == epoch]
            assert value == pytest.approx(float(row[column]), rel=1e-6), (tag, epoch)
    tags = events.Tags()
    assert {"weights/W1", "grads/W1", "weights/b2", "grads/b2"} <= set(tags["histograms"])
    assert [e.step for e in events.Histograms("grads/W1")] == [3]  # the last epoch
    assert {"test/confusion", "test/mistakes"} <= set(tags["images"])
    hparams = events.PluginTagToContent("hparams")
    assert {"_hparams_/experiment", "_hparams_/session_start_info"} <= set(hparams)
    assert b"training.lr" in hparams["_hparams_/session_start_info"]
    test = evaluation.evaluate_checkpoint(folder / "checkpoint.npz", progress=False)
    assert events.Scalars("hparam/test/accuracy")[0].value == pytest.approx(test["accuracy"])


# --- MLflow, a SQLite store beside the runs -----------------------------------------------------


def _mlflow_run(uri: str, name: str):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("mnist_mlp")
    (found,) = client.search_runs([experiment.experiment_id], f"attributes.run_name = '{name}'")
    return client, found


def test_mlflow_gets_params_metrics_files_and_a_model_that_predicts_as_mlp_eval(
    tiny_as_mnist, tmp_path, no_tracking_uri
):
    mlflow = pytest.importorskip("mlflow")
    folder = tmp_path / "runs" / "ml"
    lines: list[str] = []
    run.train_run(config(), folder, progress=False, echo=lines.append, report_to=("mlflow",))
    uri = f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}"
    client, found = _mlflow_run(uri, "ml")
    assert found.info.status == "FINISHED"
    assert found.data.params["training.lr"] == "0.05"
    assert found.data.params["model.hidden"] == "[32]"
    for column, tag in TAGS.items():
        history = {m.step: m.value for m in client.get_metric_history(found.info.run_id, tag)}
        assert history == pytest.approx(
            {int(r["epoch"]): float(r[column]) for r in rows_of(folder)}
        )
    names = {a.path for a in client.list_artifacts(found.info.run_id)}
    assert {"config.yaml", "metrics.csv", "checkpoint.npz", "model"} <= names
    test = evaluation.evaluate_on(folder / "checkpoint.npz", progress=False)
    assert found.data.metrics["test/accuracy"] == pytest.approx(test.metrics.accuracy)
    mlflow.set_tracking_uri(uri)
    model = mlflow.pyfunc.load_model(f"runs:/{found.info.run_id}/model")
    pixels = test.split.images.reshape(len(test.split), -1)
    np.testing.assert_array_equal(model.predict(pixels), test.metrics.predictions)
    pandas = pytest.importorskip("pandas")
    np.testing.assert_array_equal(
        model.predict(pandas.DataFrame(pixels.astype(float))), test.metrics.predictions
    )
    assert not any("not sent" in line for line in lines)


def test_a_resumed_run_continues_its_mlflow_run(tiny_as_mnist, tmp_path, no_tracking_uri):
    pytest.importorskip("mlflow")
    from conftest import StopAfter

    folder = tmp_path / "runs" / "again"
    with pytest.raises(run.TrainingInterrupted):
        run.train_run(
            config(), folder, progress=False, echo=lambda s: None, stop=StopAfter(5),
            report_to=("mlflow",),
        )  # fmt: skip
    uri = f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}"
    assert _mlflow_run(uri, "again")[1].info.status == "KILLED"
    lines: list[str] = []
    run.train_run(
        None, folder, resume=folder / "last.npz", overrides=("training.epochs=4",),
        progress=False, echo=lines.append,
    )  # fmt: skip
    client, found = _mlflow_run(uri, "again")  # one run, not two
    assert found.info.status == "FINISHED"
    steps = [m.step for m in client.get_metric_history(found.info.run_id, "val/accuracy")]
    assert sorted(steps) == [1, 2, 3, 4]
    assert found.data.params["training.epochs"] == "3"  # MLflow keeps a param's first value
    assert found.data.tags["mnist_mlp.resumed_with"] == '{"training.epochs": "4"}'
    assert not any("does not answer" in line or "not sent" in line for line in lines)


def test_a_missing_tracker_library_is_one_line_naming_the_extra(tiny_as_mnist, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a)
    )
    with pytest.raises(MlpError, match=r"pip install 'mnist-mlp\[mlflow\]'"):
        run.train_run(config(), Path("runs/x"), progress=False, report_to=("mlflow",))
    with pytest.raises(MlpError, match="--report-to must be one of tensorboard, mlflow"):
        run.train_run(config(), Path("runs/x"), progress=False, report_to=("wandb",))
    assert not Path("runs/x/checkpoint.npz").exists()


# --- MLflow, a real server on loopback ----------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MlflowServer:
    """``mlflow server`` on a free port of 127.0.0.1, its store in a temporary folder."""

    def __init__(self, folder: Path):
        self.folder, self.port, self.proc = folder, _free_port(), None
        self.uri = f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        import requests

        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1",
             "--port", str(self.port), "--workers", "1",
             "--backend-store-uri", f"sqlite:///{self.folder / 'mlflow.db'}",
             "--artifacts-destination", str(self.folder / "artifacts")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if requests.get(self.uri + "/health", timeout=1).ok:
                    return
            except requests.RequestException:
                time.sleep(0.3)
        self.stop()
        pytest.fail("mlflow server did not start within 60 s")

    def stop(self) -> None:
        if self.proc is not None:  # the server and the uvicorn process it started
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            self.proc = None


@pytest.fixture
def mlflow_server(tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    server = MlflowServer(tmp_path / "server")
    server.start()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.uri)
    yield server
    server.stop()


class _Outage(Callback):
    """Stops the server after epoch 1 and starts it again after epoch 3."""

    def __init__(self, server: MlflowServer):
        self.server = server

    def on_epoch_end(self, state, row, is_best):
        if row["epoch"] == 1:
            self.server.stop()
        if row["epoch"] == 3:
            self.server.start()


def test_a_server_outage_mid_run_is_waited_out_and_nothing_is_lost(tiny_as_mnist, mlflow_server):
    folder = Path("runs") / "outage"
    lines: list[str] = []
    run.train_run(
        config("training.epochs=5"), folder, progress=False, echo=lines.append,
        callbacks=(_Outage(mlflow_server),), report_to=("mlflow",),
    )  # fmt: skip
    warnings = [line for line in lines if "does not answer" in line]
    assert len(warnings) == 1 and "kept in metrics.csv" in warnings[0]
    assert not any("not sent" in line for line in lines)
    client, found = _mlflow_run(mlflow_server.uri, "outage")
    history = client.get_metric_history(found.info.run_id, "val/accuracy")
    expected = {int(r["epoch"]): float(r["val_acc"]) for r in rows_of(folder)}
    assert {m.step: m.value for m in history} == pytest.approx(expected)
    assert found.info.status == "FINISHED"


def test_a_server_that_never_answers_says_so_at_the_end(tiny_as_mnist, mlflow_server):
    folder = Path("runs") / "gone"
    lines: list[str] = []

    class Gone(Callback):
        def on_epoch_end(self, state, row, is_best):
            mlflow_server.stop()

    run.train_run(
        config(), folder, progress=False, echo=lines.append, callbacks=(Gone(),),
        report_to=("mlflow",),
    )  # fmt: skip
    assert "test accuracy" in lines[-2]
    assert lines[-1].startswith(
        f"not sent to MLflow at {mlflow_server.uri}: the metrics of epochs 1-3"
    )
    assert len(rows_of(folder)) == 3  # the record is whole


def test_a_server_that_does_not_answer_at_the_start_stops_the_run_in_one_line(
    tiny_as_mnist, monkeypatch
):
    pytest.importorskip("mlflow")
    uri = f"http://127.0.0.1:{_free_port()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    started = time.monotonic()
    with pytest.raises(MlpError) as info:
        run.train_run(config(), Path("runs/none"), progress=False, report_to=("mlflow",))
    assert time.monotonic() - started < 30
    assert uri in str(info.value) and "\n" not in str(info.value)
    assert not Path("runs/none/metrics.csv").exists()  # nothing trained


# --- a sweep: one parent run, a child per trial ---------------------------------------------------


def test_a_sweep_is_a_parent_run_with_a_child_per_trial(tiny_as_mnist, tmp_path, no_tracking_uri):
    pytest.importorskip("optuna")
    pytest.importorskip("mlflow")
    from mnist_mlp import sweep

    (tmp_path / "base.yaml").write_text(
        yaml.safe_dump({"data": {"validation": 16}, "model": {"hidden": [8]},
                        "training": {"epochs": 1, "batch_size": 16}})
    )  # fmt: skip
    spec = tmp_path / "sweep.yaml"
    spec.write_text(
        yaml.safe_dump({"base": "base.yaml", "method": "grid",
                        "parameters": {"training.lr": {"values": [0.02, 0.05]}}})
    )  # fmt: skip
    sweep.sweep(spec, progress=False, log=lambda s: None, report_to=("mlflow",))
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("mnist_mlp").experiment_id])
    (parent,) = [r for r in runs if "mnist_mlp.sweep" in r.data.tags]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted(r.data.params["training.lr"] for r in children) == ["0.02", "0.05"]
    assert all(r.data.metrics["val/accuracy"] >= 0 for r in children)
    assert len(runs) == 3


def test_the_estimator_reports_each_fit(tmp_path, monkeypatch, no_tracking_uri):
    pytest.importorskip("sklearn")
    pytest.importorskip("tensorboardX")
    pytest.importorskip("mlflow")
    from conftest import make_tiny_arrays

    from mnist_mlp import MLPClassifier

    monkeypatch.chdir(tmp_path)
    arrays = make_tiny_arrays(200, 10)
    x, y = arrays["train-images"].reshape(-1, 784), arrays["train-labels"]
    clf = MLPClassifier((16,), max_iter=2, random_state=0, report_to=["tensorboard", "mlflow"])
    clf.fit(x, y)
    (folder,) = Path("runs").glob("MLPClassifier-*")
    assert (folder / "checkpoint.npz").exists() and list((folder / "tensorboard").iterdir())
    client, found = _mlflow_run(f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}", folder.name)
    losses = [m.value for m in client.get_metric_history(found.info.run_id, "train/loss")]
    assert losses == pytest.approx(clf.loss_curve_)
    with pytest.raises(ValueError, match="report_to must be a list of tensorboard, mlflow"):
        MLPClassifier(report_to=["wandb"]).fit(x, y)


def test_a_flat_config_names_every_key(tiny_as_mnist):
    from mnist_mlp.config import keys
    from mnist_mlp.trackers import flat_config

    flat = flat_config(config())
    assert set(flat) == set(keys())
    assert flat["training.lr"] == 0.05 and flat["data.dir"] == "None"
