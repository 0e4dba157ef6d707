"""A run in MLflow: its config as params, its epochs as metrics, its files and the model.

Where: ``MLFLOW_TRACKING_URI`` (a tracking server, or a database such as PostgreSQL shared by
many machines); without it, a SQLite store beside the runs, ``<output.dir>/mlflow.db``, with the
artifacts in ``<output.dir>/mlartifacts/``. The experiment is ``MLFLOW_EXPERIMENT_NAME`` or
``mnist_mlp``; the run is named after its folder (a resumed run continues the same MLflow run).

- params: the resolved config, flattened (``training.lr``, ``model.hidden``, ...);
- metrics: the names and steps TensorBoard gets (``train/loss``, ``val/accuracy``, ...), and the
  final ``test/accuracy``, ``test/loss``;
- artifacts: ``config.yaml``, ``metrics.csv``, the run's pictures and ``report.html`` where they
  were drawn, ``checkpoint.npz``, and ``model.onnx`` where the ``export`` extra is installed;
- the model, ``runs:/<run id>/model``: :mod:`mnist_mlp.trackers.mlflow_model` and the best
  checkpoint, for ``mlflow.pyfunc.load_model`` and ``mlflow models serve`` wherever mnist_mlp is
  installed.

A server that does not answer at the start is one line naming it, within
:data:`CONNECT_SECONDS`. One that stops answering mid-run does not stop training: the first
failure is said once, the epochs' metrics wait and are sent when it answers again, and
:meth:`MLflow.unsent` says what never arrived (``metrics.csv`` has it all).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mnist_mlp import __version__
from mnist_mlp import config as config_mod
from mnist_mlp import data as data_mod
from mnist_mlp.errors import MlpError
from mnist_mlp.trackers.base import RunEnd, Tracker, epoch_metrics, flat_config

CONNECT_SECONDS = 10.0  # to answer at the start, per attempt (two attempts: within 30 s)
REQUEST_SECONDS = "10"  # each call to a server mid-run, after which the metrics wait
EXPERIMENT = "mnist_mlp"
# what the logged model needs where it is loaded: this package (its core dependencies come
# with it). Its code is not copied into the model: loaded beside an installed mnist_mlp, a copy
# would shadow it in the loading process.
REQUIREMENTS = (f"mnist-mlp=={__version__}",)
RUN_ID_FILE = "mlflow_run_id"  # in the run folder, so that a resumed run continues its run
FILES = ("config.yaml", "metrics.csv", "curves.png", "confusion.png", "mistakes.png", "units.png",
         "report.html")  # fmt: skip


def tracking_uri(output_dir: str) -> str:
    """``MLFLOW_TRACKING_URI``, else a SQLite file beside the runs (MLflow 3's own default is
    SQLite too)."""
    return (
        os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path(output_dir).resolve()}/mlflow.db"
    )


def client_for(uri: str):
    """An ``MlflowClient`` for ``uri``, checked to answer (one line naming it if not)."""
    # a server's calls fail within seconds instead of retrying for minutes (MLflow's default),
    # and MLflow's own bars and notes stay off the run's output
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", REQUEST_SECONDS)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    from mlflow.tracking import MlflowClient

    for name in ("mlflow", "alembic"):  # after the import, which sets MLflow's own level
        logging.getLogger(name).setLevel(logging.WARNING)

    if uri.startswith(("http://", "https://")):
        _check_server(uri)
    try:
        client = MlflowClient(tracking_uri=uri)
        client.search_experiments(max_results=1)
    except Exception as exc:  # any failure to reach the store is the user's to fix
        raise MlpError(f"MLflow tracking store {uri} cannot be used: {_short(exc)}") from None
    return client


def _check_server(uri: str) -> None:
    import requests

    why = ""
    for _ in range(2):
        try:
            answer = requests.get(uri.rstrip("/") + "/health", timeout=CONNECT_SECONDS)
            if answer.ok:
                return
            why = f"HTTP {answer.status_code}"
        except requests.Timeout:
            why = f"no answer within {CONNECT_SECONDS:g} s"
        except requests.ConnectionError:
            why = "connection refused or host unreachable"
        except requests.RequestException as exc:
            why = _short(exc)
        time.sleep(1)
    raise MlpError(
        f"the MLflow tracking server {uri} does not answer ({why}); start it, or unset "
        "MLFLOW_TRACKING_URI to track into a SQLite file beside the runs"
    )


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def experiment_id(client, uri: str, output_dir: str) -> str:
    """The experiment's id (created where missing, its artifacts beside a SQLite store)."""
    name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or EXPERIMENT
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    location = None
    if uri.startswith("sqlite:"):
        location = (Path(output_dir).resolve() / "mlartifacts").as_uri()
    return client.create_experiment(name, artifact_location=location)


def parent_run(study, name: str, output_dir: str) -> str:
    """The MLflow run that stands for a whole sweep: the one the study records (its workers on
    other machines find it there), else a new one, recorded."""
    recorded = study.user_attrs.get("mlflow_parent_run")
    if recorded:
        return recorded
    uri = tracking_uri(output_dir)
    client = client_for(uri)
    run = client.create_run(
        experiment_id(client, uri, output_dir), run_name=name, tags={"mnist_mlp.sweep": name}
    )
    study.set_user_attr("mlflow_parent_run", run.info.run_id)
    return run.info.run_id


class MLflow(Tracker):
    """Sends one run to MLflow (see the module docstring)."""

    name = "mlflow"

    def __init__(
        self,
        folder: Path,
        config: config_mod.Config,
        data: data_mod.Data,
        echo: Callable[[str], None] = print,
        parent: str | None = None,
    ):
        self.folder, self.config, self.echo = folder, config, echo
        self.uri = tracking_uri(config.output.dir)
        self.client = client_for(self.uri)
        self.run_id = self._run(parent)
        self.pending: list[Any] = []  # metrics not sent yet, oldest first
        self.failed: list[str] = []  # what was given up on, in words
        self.warned = False
        self._send(params=self._new_params(config))

    def _new_params(self, config: config_mod.Config) -> list[tuple[str, Any]]:
        """The config's params MLflow does not hold yet. A resumed run may have changed a few
        (``training.epochs``); MLflow keeps a param's first value, so the new ones go into the
        tag ``mnist_mlp.resumed_with``."""
        flat = {k: str(v) for k, v in flat_config(config).items()}
        try:
            held = self.client.get_run(self.run_id).data.params
        except Exception:  # then _send says so
            held = {}
        changed = {k: v for k, v in flat.items() if k in held and held[k] != v}
        if changed:
            with contextlib.suppress(Exception):
                self.client.set_tag(self.run_id, "mnist_mlp.resumed_with", json.dumps(changed))
        return [(k, v) for k, v in flat.items() if k not in held]

    def _run(self, parent: str | None) -> str:
        saved = self.folder / RUN_ID_FILE
        if saved.exists():  # resuming: the same MLflow run continues
            return saved.read_text().strip()
        tags = {"mnist_mlp.folder": str(self.folder)}
        if parent:
            tags["mlflow.parentRunId"] = parent
        run = self.client.create_run(
            experiment_id(self.client, self.uri, self.config.output.dir),
            run_name=self.folder.name,
            tags=tags,
        )
        self.folder.mkdir(parents=True, exist_ok=True)
        saved.write_text(run.info.run_id)
        return run.info.run_id

    def on_epoch_end(self, state, row: dict, is_best: bool) -> None:
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        epoch = int(row["epoch"])
        self.pending += [Metric(k, v, stamp, epoch) for k, v in epoch_metrics(row).items()]
        self._send()

    def _send(self, params: list | None = None) -> bool:
        """Send the pending metrics (and ``params``); on failure keep them, say so once."""
        from mlflow.entities import Param

        given = params or []
        try:
            for start in range(0, len(given), 100):  # MLflow takes 100 params a call
                chunk = [Param(k, str(v)) for k, v in given[start : start + 100]]
                self.client.log_batch(self.run_id, params=chunk)
            while self.pending:
                self.client.log_batch(self.run_id, metrics=self.pending[:1000])
                del self.pending[:1000]
        except Exception as exc:  # the run goes on; metrics.csv keeps the record
            if not self.warned:
                self.echo(
                    f"MLflow at {self.uri} does not answer ({_short(exc)}); training goes on, the "
                    "metrics are kept in metrics.csv and sent when it answers again"
                )
                self.warned = True
            if params:
                self.failed.append("the params")
            return False
        return True

    def on_run_end(self, end: RunEnd) -> None:
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        step = int(self.config.training.epochs)
        self.pending += [Metric(k, v, stamp, step) for k, v in end.metrics.items()]
        self._send()
        sends = [("the files", self._files)]
        if end.checkpoint is not None:
            sends.append(("the model", self._model))
        for what, send in sends:
            try:
                send(end)
            except Exception as exc:  # said in the run's last line
                self.failed.append(f"{what} ({_short(exc)})")
        self._finish("FINISHED")

    def _files(self, end: RunEnd) -> None:
        for name in FILES:
            if (end.folder / name).exists():
                self.client.log_artifact(self.run_id, str(end.folder / name))
        if end.checkpoint is None:
            return
        self.client.log_artifact(self.run_id, str(end.checkpoint))
        try:
            from mnist_mlp import checkpoint, export
        except ImportError:
            return
        try:
            proto = export.build(checkpoint.load(end.checkpoint))
        except MlpError:  # the export extra is missing: the ONNX file is optional
            return
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "model.onnx"
            path.write_bytes(proto.SerializeToString())
            self.client.log_artifact(self.run_id, str(path))

    def _model(self, end: RunEnd) -> None:
        import mlflow.pyfunc

        with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
            # its advice to type predict's input: the model takes arrays and DataFrames alike
            warnings.simplefilter("ignore", UserWarning)
            mlflow.pyfunc.save_model(
                Path(tmp) / "model",
                python_model=str(Path(__file__).with_name("mlflow_model.py")),
                artifacts={"checkpoint": str(end.checkpoint)},
                pip_requirements=list(REQUIREMENTS),
            )
            self.client.log_artifacts(self.run_id, str(Path(tmp) / "model"), "model")

    def _finish(self, status: str) -> None:
        try:
            self.client.set_terminated(self.run_id, status)
        except Exception:  # the run's status is the least of what matters
            self.failed.append("the run's end")

    def on_fit_end(self, state) -> None:
        # a completed run ends in on_run_end, once tested; a stopped or failed one ends here
        if state.status in ("interrupted", "running"):
            self._send()
            self._finish("KILLED")

    def unsent(self) -> str | None:
        missing = list(self.failed)
        if self.pending:
            epochs = sorted({m.step for m in self.pending})
            missing.insert(0, f"the metrics of epochs {epochs[0]}-{epochs[-1]}")
        if not missing:
            return None
        return (
            f"not sent to MLflow at {self.uri}: {', '.join(missing)} (metrics.csv has every epoch)"
        )
