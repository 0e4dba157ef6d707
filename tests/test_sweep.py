"""mlp sweep: the sweep file's checks, trials as run folders, the study's cap over workers,
dead workers' trials, pruning, Ctrl-C and kill -9, and a real PostgreSQL server."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from conftest import require

from mnist_mlp import memory
from mnist_mlp.errors import ConfigError

optuna = pytest.importorskip("optuna", reason="the sweep extra (optuna) is not installed")
from mnist_mlp import sweep  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
TINY_BASE = {
    "data": {"validation": 16},
    "model": {"hidden": [16]},
    "training": {"epochs": 3, "batch_size": 16, "lr": 0.05},
}


def write_spec(folder: Path, base_config: dict | None = TINY_BASE, **spec) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    if base_config is not None:
        (folder / "base.yaml").write_text(yaml.safe_dump(base_config))
        spec.setdefault("base", "base.yaml")
    spec.setdefault("method", "random")
    spec.setdefault("run_cap", 4)
    spec.setdefault(
        "parameters",
        {
            "training.lr": {"distribution": "log_uniform_values", "min": 0.01, "max": 0.3},
            "model.hidden": {"values": [[8], [16]]},
        },
    )
    path = folder / "sweep.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


# --- the sweep file -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "change, message",
    [
        ({"methd": "grid"}, "unknown key 'methd' (did you mean 'method'?)"),
        ({"method": "bayesian"}, "method must be one of grid, random, bayes, got 'bayesian'"),
        (
            {"metric": {"name": "accuracy"}},
            "metric.name must be one of val_acc, val_loss, got 'accuracy'",
        ),
        (
            {"parameters": {"training.lrr": {"values": [0.1]}}},
            "parameters.training.lrr: 'training.lrr' is not a config key (did you mean "
            "'training.lr'?)",
        ),
        ({"parameters": {"lr": {"values": [0.1]}}}, "(did you mean 'training.lr'?)"),
        (
            {"parameters": {"training.lr": {"distribution": "log_uniform", "min": 0.1, "max": 1}}},
            "parameters.training.lr.distribution must be one of constant, categorical, uniform",
        ),
        (
            {"parameters": {"training.lr": {"distribution": "uniform", "min": 0.5, "max": 0.1}}},
            "min must be < max",
        ),
        (
            {
                "parameters": {
                    "training.lr": {"distribution": "log_uniform_values", "min": 0, "max": 0.1}
                }
            },
            "log_uniform_values needs min > 0",
        ),
        (
            {"parameters": {"training.lr": {"distribution": "uniform", "min": -0.1, "max": 0.1}}},
            "parameters.training.lr: -0.1 would not be a valid config: training.lr must be > 0, "
            "got -0.1",
        ),
        (
            {"parameters": {"model.activation": {"values": ["relu", "gelu"]}}},
            "model.activation must be one of relu, sigmoid, tanh, got 'gelu'",
        ),
        (
            {"method": "grid", "parameters": {"training.lr": {"min": 0.1, "max": 0.2}}},
            "method grid needs a list of values for every parameter",
        ),
        ({"run_cap": 0}, "run_cap must be a whole number >= 1"),
        ({"early_terminate": {"type": "hyperband", "min_itr": 2}}, "(did you mean 'min_iter'?)"),
        ({"early_terminate": {"type": "median"}}, "early_terminate.type must be hyperband"),
        ({"base": "nope.yaml"}, "base 'nope.yaml' not found"),
        (
            {"parameters": {"model.hidden": {"values": [[16], [100000000]]}}},
            "model.hidden=[100000000]: training would need about",
        ),
    ],
)
def test_a_bad_sweep_file_is_one_error_naming_the_key(tmp_path, change, message):
    with pytest.raises(ConfigError) as info:
        sweep.load_spec(write_spec(tmp_path, **change))
    assert message in str(info.value) and "\n" not in str(info.value)


def test_a_good_sweep_file(tmp_path):
    spec = sweep.load_spec(
        write_spec(
            tmp_path,
            method="grid",
            run_cap=None,
            parameters={
                "training.lr": {"values": [0.01, 0.1]},
                "model.hidden": {"values": [[8], [16], [8, 8]]},
            },
        )
    )
    # a grid's size
    assert spec.run_cap == 6 and spec.metric == "val_acc" and spec.goal == "maximize"
    assert spec.base.training.epochs == 3 and spec.name == "sweep"
    assert spec.config_for({"model.hidden": [8, 8]}).model.hidden == [8, 8]


def test_a_grid_sweep_runs_its_whole_grid_and_ends_cleanly(tiny_as_mnist, tmp_path):
    """Optuna's GridSampler stops an optimize() loop when its grid is done, which outside one
    raised RuntimeError at the end of every grid sweep."""
    path = write_spec(
        tmp_path, method="grid", run_cap=None, parameters={"training.lr": {"values": [0.02, 0.05]}}
    )
    summary = sweep.sweep(path, out=tmp_path / "sw", progress=False, log=lambda line: None)
    assert summary["trials"]["complete"] == 2
    trials = (tmp_path / "sw" / "trials").iterdir()
    lrs = [yaml.safe_load((t / "config.yaml").read_text())["training"]["lr"] for t in trials]
    assert sorted(lrs) == [0.02, 0.05]


VIEWS = [{"kind": "none"}, {"kind": "deslant"}, {"kind": "width", "width": 16}]


def test_a_committee_study_keeps_every_member_and_is_evaluated_as_one(tiny_as_mnist, tmp_path):
    from conftest import StopAfter

    from mnist_mlp import evaluation, run

    path = write_spec(
        tmp_path, method="grid", run_cap=None, committee=True,
        parameters={"data.normalise": {"values": VIEWS}},
    )  # fmt: skip
    spec = sweep.load_spec(path)
    assert spec.committee and spec.run_cap == 3
    folder = tmp_path / "sw"
    folder.mkdir()
    # a worker cut off in its second member (as by a kill): that member fails, the first stays
    url = sweep.storage_url(None, folder)
    sweep.create_study(spec, sweep.open_storage(url))
    with pytest.raises(run.TrainingInterrupted):
        sweep.Worker(spec, folder, url, seed=0).run(StopAfter(16))  # in the 2nd member
    states = [t.state.name for t in _study(folder, path).get_trials()]
    assert states == ["COMPLETE", "FAIL", "WAITING"]  # the member cut off, queued again
    summary = sweep.sweep(path, out=folder, progress=False, log=lambda line: None)
    assert summary["trials"]["complete"] == 3
    committee = summary["committee"]
    paths = [m["checkpoint"] for m in committee["members"]]
    assert len(paths) == 3 and all(Path(p).exists() for p in paths)  # every member kept
    views = {str(checkpoint_view(p)) for p in paths}
    assert len(views) == 3  # one member per view
    for p in paths:  # each learnt from its own view: the weights of its config trained alone
        member = checkpoint_of(p)
        alone = tmp_path / "alone" / Path(p).parent.name
        run.train_run(member.config, alone, progress=False, echo=lambda line: None)
        assert (checkpoint_of(alone / "checkpoint.npz").params["W1"] == member.params["W1"]).all()
    again = evaluation.evaluate_committee(paths, "val", progress=False)
    assert committee["val_accuracy"] == again["accuracy"]
    assert "the committee of 3 members" in sweep.format_summary(summary)
    from mnist_mlp import distill

    assert distill.members_of(str(folder)) == paths  # the folder names it as a teacher


def checkpoint_of(path):
    from mnist_mlp import checkpoint

    return checkpoint.load(path)


def checkpoint_view(path) -> dict:
    view = checkpoint_of(path).config.data.normalise
    return {"kind": view.kind, "width": view.width}


def test_a_section_parameter_takes_mappings_only(tmp_path):
    path = write_spec(tmp_path, parameters={"data.normalise": {"values": ["deslant"]}})
    with pytest.raises(ConfigError, match=r"data\.normalise is a section"):
        sweep.load_spec(path)


def test_the_shipped_record_committee_is_valid():
    spec = sweep.load_spec(ROOT / "configs" / "record.yaml")
    assert spec.committee and spec.method == "grid" and spec.run_cap == 4
    assert spec.base.model.hidden == [1024, 512] and spec.base.training.epochs == 300


def test_the_shipped_sweep_file_is_valid():
    spec = sweep.load_spec(ROOT / "configs" / "sweep.yaml")
    assert spec.base.model.dropout == 0 and not spec.base.data.augment.enabled  # the plain net
    assert spec.hyperband == {"min_iter": 3, "eta": 3} and spec.run_cap == 24


def test_too_much_memory_is_one_line_for_train_too(tiny_as_mnist):
    from click.testing import CliRunner

    from mnist_mlp.cli import main

    result = CliRunner().invoke(main, ["train", "--set", "model.hidden=[100000000]"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "model.hidden=[100000000]: training would need about" in result.stderr
    assert "is available; choose a smaller model.hidden" in result.stderr
    from mnist_mlp.config import load_config

    big_batch = load_config(overrides=["training.batch_size=100000"])
    with pytest.raises(
        ConfigError, match=r"training.batch_size=100000: .* but 1.0 GB is available"
    ):
        # 1024 units fit; a batch of 100,000 does not
        memory.check_memory(big_batch, available=10**9)
    memory.check_memory(load_config(), available=10**9)


# --- sweeps on the tiny dataset, in this process --------------------------------------------------


def test_a_sweep_writes_trials_results_and_a_best_config_that_reproduces(tiny_as_mnist, tmp_path):
    spec_path = write_spec(tmp_path / "spec", run_cap=5)
    summary = sweep.sweep(
        spec_path, out=tmp_path / "sw", progress=False, log=lambda s: None, seed=1
    )
    folder = tmp_path / "sw"
    rows = sweep.write_results(
        sweep.create_study(
            sweep.load_spec(spec_path), sweep.open_storage(sweep.storage_url(None, folder))
        ),
        sweep.load_spec(spec_path),
        folder,
    )
    assert summary["trials"]["complete"] == 5 and len(rows) == 5
    assert {r["state"] for r in rows} == {"complete"} and all(r["epochs"] == 3 for r in rows)
    assert all((folder / "trials" / str(r["number"]) / "metrics.csv").exists() for r in rows)
    kept = sorted(p.parent.name for p in folder.glob("trials/*/checkpoint.npz"))
    assert len(kept) == sweep.KEEP_CHECKPOINTS  # the best few keep their checkpoint
    assert not list(folder.glob("trials/*/last.npz"))
    best = summary["best"]
    assert str(best["number"]) in kept and best["value"] == max(r["value"] for r in rows)
    assert 0 <= best["test_accuracy"] <= 1  # tested once, at the end
    assert set(summary["importances"]) <= {"training.lr", "model.hidden"}
    # best.yaml is complete, seed included: training it again gives the same validation accuracy.
    from mnist_mlp import run
    from mnist_mlp.config import load_config

    again = run.train_run(
        load_config(folder / "best.yaml"), tmp_path / "again", progress=False, echo=lambda s: None
    )
    assert again.state.best["val_acc"] == best["value"]
    # trials left runs/latest alone
    assert not (tmp_path / "runs" / "latest").resolve().is_relative_to(folder)
    header = (folder / "results.csv").read_text().splitlines()[0]
    # file order
    assert header == "number,state,value,model.hidden,training.lr,epochs,seconds,host,sampler_seed"


def test_rerunning_continues_and_never_reruns_a_finished_trial(tiny_as_mnist, tmp_path):
    spec_path = write_spec(tmp_path / "spec", run_cap=3)
    sweep.sweep(spec_path, out=tmp_path / "sw", progress=False, log=lambda s: None, seed=2)
    first = (tmp_path / "sw" / "results.csv").read_text().splitlines()
    summary = sweep.sweep(
        spec_path, out=tmp_path / "sw", run_cap=5, progress=False, log=lambda s: None, seed=3
    )
    lines = (tmp_path / "sw" / "results.csv").read_text().splitlines()
    assert lines[:4] == first and len(lines) == 6  # the first three unchanged, two more
    assert summary["trials"]["complete"] == 5
    # at its cap: nothing more runs
    assert (
        sweep.sweep(spec_path, out=tmp_path / "sw", run_cap=5, progress=False, log=lambda s: None)[
            "trials"
        ]["complete"]
        == 5
    )


def test_the_cap_holds_over_workers_racing_for_the_last_places(tiny_as_mnist, tmp_path):
    spec_path = write_spec(tmp_path / "spec", run_cap=6)
    spec, folder = sweep.load_spec(spec_path), tmp_path / "sw"
    url = sweep.storage_url(None, folder)
    folder.mkdir()
    study = sweep.create_study(spec, sweep.open_storage(url))
    workers = [sweep.Worker(spec, folder, url, seed) for seed in (10, 11, 12)]
    threads = [threading.Thread(target=w.run) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    counts = sweep._counts(study)
    assert counts["complete"] + counts["pruned"] == 6 and counts["running"] == 0
    seeds = {
        t.user_attrs["worker"]["sampler_seed"]
        for t in study.get_trials()
        if not t.user_attrs.get("discarded")
    }
    assert seeds <= {10, 11, 12} and len(seeds) >= 2  # each worker its own seed, recorded
    params = [
        tuple(sorted(t.params.items())) for t in study.get_trials() if t.state.name == "COMPLETE"
    ]
    assert len(set(params)) == len(params)  # different seeds: no trial suggested twice


def test_workers_with_one_seed_would_suggest_the_same_trials(tiny_as_mnist, tmp_path):
    # The pitfall the per-worker seeds avoid, shown with Optuna itself.
    spec = sweep.load_spec(write_spec(tmp_path / "spec"))
    a = sweep.create_study(spec, optuna.storages.InMemoryStorage(), sampler_seed=7)
    b = sweep.create_study(spec, optuna.storages.InMemoryStorage(), sampler_seed=7)
    assert a.ask().suggest_float("x", 0, 1) == b.ask().suggest_float("x", 0, 1)


def test_a_dead_workers_trial_is_failed_and_its_budget_given_to_a_new_one(tiny_as_mnist, tmp_path):
    spec_path = write_spec(tmp_path / "spec", run_cap=3)
    spec, folder = sweep.load_spec(spec_path), tmp_path / "sw"
    folder.mkdir()
    study = sweep.create_study(spec, sweep.open_storage(sweep.storage_url(None, folder)))
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    trial = study.ask()  # as a worker left it when kill -9 ended it: RUNNING, its process gone
    trial.suggest_float("training.lr", 0.01, 0.3, log=True)
    trial.set_user_attr(
        "worker", {"host": socket.gethostname(), "pid": int(gone.stdout), "boot": sweep._boot_id()}
    )
    other = study.ask()  # a trial of another machine whose heartbeat stopped two minutes ago
    other.set_user_attr("worker", {"host": "elsewhere", "pid": os.getpid()})
    other.set_user_attr("heartbeat", time.time() - 120)
    logged = []
    summary = sweep.sweep(spec_path, out=folder, progress=False, log=logged.append, seed=4)
    assert logged and "marked failed trials 0, 1" in logged[0]
    assert summary["trials"] == {"complete": 3, "pruned": 0, "fail": 2, "running": 0}
    failed = [t for t in study.get_trials() if t.state.name == "FAIL"]
    assert [t.user_attrs["failed_because"] for t in failed] == ["its worker died"] * 2


def test_a_grid_point_whose_worker_dies_late_is_run_again_here(
    tiny_as_mnist, tmp_path, monkeypatch
):
    """A committee's member on another machine dies after this one has run every other point:
    its point, queued again, is run here, and the sweep ends (it used to wait for it forever)."""
    spec_path = write_spec(
        tmp_path / "spec", method="grid", run_cap=None, committee=True,
        parameters={"training.lr": {"values": [0.05, 0.1, 0.2]}},
    )  # fmt: skip
    spec, folder = sweep.load_spec(spec_path), tmp_path / "sw"
    folder.mkdir()
    study = sweep.create_study(spec, sweep.open_storage(sweep.storage_url(None, folder)))
    away = study.ask()  # a point of the grid, under way elsewhere
    point = spec.parameters[0].suggest(away)
    away.set_user_attr("worker", {"host": "elsewhere", "pid": 1})
    away.set_user_attr("heartbeat", time.time())
    real = sweep.fail_dead_trials
    calls = []

    def dies_once_the_rest_is_done(study, now=None):  # heard from until then
        calls.append(len(study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))))
        return real(study, now=time.time() + 120) if calls[-1] == 2 else []

    monkeypatch.setattr(sweep, "fail_dead_trials", dies_once_the_rest_is_done)
    monkeypatch.setattr(sweep.worker, "fail_dead_trials", dies_once_the_rest_is_done)
    summary = sweep.sweep(spec_path, out=folder, progress=False, log=lambda s: None, seed=3)
    assert summary["trials"] == {"complete": 3, "pruned": 0, "fail": 1, "running": 0}
    done = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    lrs = [spec.parameters[0].suggest(optuna.trial.FixedTrial(t.params)) for t in done]
    assert sorted(lrs) == [0.05, 0.1, 0.2] and lrs[-1] == point
    assert len(summary["committee"]["members"]) == 3


def test_a_live_workers_trial_is_left_alone(tiny_as_mnist, tmp_path):
    spec = sweep.load_spec(write_spec(tmp_path / "spec"))
    study = sweep.create_study(spec, optuna.storages.InMemoryStorage())
    trial = study.ask()
    trial.set_user_attr(
        "worker", {"host": socket.gethostname(), "pid": os.getpid(), "boot": sweep._boot_id()}
    )
    away = study.ask()
    away.set_user_attr("worker", {"host": "elsewhere", "pid": 1})
    away.set_user_attr("heartbeat", time.time())
    just_asked = study.ask()  # its worker has not said who it is yet: young, so alive
    assert sweep.fail_dead_trials(study) == []
    assert sweep.fail_dead_trials(study, now=just_asked.datetime_start.timestamp() + 120) == [1, 2]


def test_hyperband_prunes_trailing_trials_early(tiny_as_mnist, tmp_path):
    spec_path = write_spec(
        tmp_path / "spec",
        run_cap=12,
        base_config={**TINY_BASE, "training": {**TINY_BASE["training"], "epochs": 9}},
        early_terminate={"type": "hyperband", "min_iter": 1, "eta": 3},
        parameters={"training.lr": {"distribution": "log_uniform_values", "min": 1e-4, "max": 0.3}},
    )
    spec = sweep.load_spec(spec_path)
    study = sweep.create_study(spec, optuna.storages.InMemoryStorage())
    assert study.pruner._max_resource == 9  # the epochs, not "auto" (which prunes nothing at first)
    summary = sweep.sweep(
        spec_path, out=tmp_path / "sw", progress=False, log=lambda s: None, seed=5
    )
    _, rows = _read(tmp_path / "sw")
    pruned = [r for r in rows if r["state"] == "pruned"]
    assert pruned and all(r["epochs"] < 9 for r in pruned)
    assert summary["epochs_run"] < 12 * 9
    assert all(
        not (tmp_path / "sw" / "trials" / str(r["number"]) / "checkpoint.npz").exists()
        for r in pruned
    )


def _read(folder):
    from mnist_mlp import report

    return report.read_sweep(folder)


def test_sweep_report_draws_the_search(tiny_as_mnist, tmp_path):
    pytest.importorskip("matplotlib")
    from mnist_mlp import report

    sweep.sweep(
        write_spec(tmp_path / "spec", run_cap=4),
        out=tmp_path / "sw",
        progress=False,
        log=lambda s: None,
        seed=6,
    )
    result = report.make(tmp_path / "sw")
    for key in ("trials", "parameters", "importances", "curves", "html"):
        assert Path(result["paths"][key]).stat().st_size > 1000, key
    page = (tmp_path / "sw" / "sweep.html").read_text()
    assert page.count("data:image/png;base64,") == 4 and "The best trials" in page
    summary = json.loads((tmp_path / "sw" / "summary.json").read_text())
    assert summary["parameters"] == {
        "model.hidden": "categorical",
        "training.lr": "log_uniform_values",
    }
    _, rows = _read(tmp_path / "sw")
    assert report._guess_parameters(rows) == {
        "model.hidden": "categorical",
        "training.lr": "uniform",
    }


def test_cli_json_and_missing_extra(tiny_as_mnist, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from mnist_mlp.cli import main

    spec_path = write_spec(tmp_path / "spec", run_cap=2)
    result = CliRunner().invoke(
        main, ["sweep", str(spec_path), "--out", str(tmp_path / "sw"), "--json"]
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["trials"]["complete"] == 2 and summary["best"]["number"] in (0, 1)
    result = CliRunner().invoke(main, ["sweep", str(spec_path), "--storage", "sqlite:///x.db"])
    assert result.exit_code == 1 and "locks up with several workers" in result.stderr
    monkeypatch.setitem(sys.modules, "optuna", None)
    result = CliRunner().invoke(main, ["sweep", str(spec_path)])
    assert result.exit_code == 1 and "pip install 'mnist-mlp[sweep]'" in result.stderr


# --- as a user runs it: processes, Ctrl-C, kill -9 (real MNIST) -----------------------------------


REAL_BASE = {
    "data": {"subset": 3000},
    "model": {"hidden": [32]},
    "training": {"epochs": 3, "lr": 0.1},
}
REAL_PARAMS = {"training.lr": {"distribution": "log_uniform_values", "min": 0.03, "max": 0.3}}


def _mlp_sweep(args, env, cwd):
    return subprocess.Popen(
        [sys.executable, "-m", "mnist_mlp", "sweep", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for_rows(folder: Path, n: int, timeout: float = 120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        path = folder / "results.csv"
        if path.exists() and len(path.read_text().splitlines()) > n:
            return
        time.sleep(0.1)
    raise AssertionError(f"no {n} finished trials in {timeout} s")


def _wait_for_a_trial_under_way(folder: Path, spec_path: Path, timeout: float = 60):
    """Until a trial is running and has finished its first epoch (so a signal cuts into it)."""
    deadline = time.monotonic() + timeout
    study = _study(folder, spec_path)
    while time.monotonic() < deadline:
        for t in study.get_trials(states=(optuna.trial.TrialState.RUNNING,)):
            metrics = folder / "trials" / str(t.number) / "metrics.csv"
            if metrics.exists() and len(metrics.read_text().splitlines()) >= 2:
                return
        time.sleep(0.02)
    raise AssertionError("no trial under way")


def _study(folder: Path, spec_path: Path, url: str | None = None):
    spec = sweep.load_spec(spec_path)
    return sweep.create_study(spec, sweep.open_storage(sweep.storage_url(url, folder)))


@pytest.mark.realdata
@pytest.mark.parametrize("how", ["ctrl-c", "kill -9"])
def test_a_stopped_sweep_continues_with_the_same_command(real_env, tmp_path, how):
    # trials long enough to cut into
    base = {**REAL_BASE, "training": {**REAL_BASE["training"], "epochs": 20}}
    spec_path = write_spec(tmp_path / "spec", base_config=base, run_cap=10, parameters=REAL_PARAMS)
    folder = tmp_path / "sw"
    env = {**os.environ, "MNIST_MLP_HOME": str(real_env)}
    proc = _mlp_sweep([str(spec_path), "--out", str(folder), "--quiet"], env, tmp_path)
    _wait_for_rows(folder, 2)
    _wait_for_a_trial_under_way(folder, spec_path)
    proc.send_signal(signal.SIGINT if how == "ctrl-c" else signal.SIGKILL)
    out, err = proc.communicate(timeout=60)
    if how == "ctrl-c":
        assert (
            proc.returncode == 130
            and "Continue with the same command" in err
            and "Traceback" not in err
        )
    else:
        assert proc.returncode == -signal.SIGKILL
    before = {t.number: t.state.name for t in _study(folder, spec_path).get_trials()}
    assert "COMPLETE" in before.values()
    again = _mlp_sweep([str(spec_path), "--out", str(folder), "--json"], env, tmp_path)
    out, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    summary = json.loads(out)
    trials = _study(folder, spec_path).get_trials()
    assert summary["trials"]["complete"] + summary["trials"]["pruned"] == 10
    assert not [t for t in trials if t.state.name == "RUNNING"]  # nothing left RUNNING
    for number, state in before.items():  # nothing finished was rerun
        if state in ("COMPLETE", "PRUNED"):
            assert trials[number].state.name == state
    assert any(t.state.name == "FAIL" for t in trials)  # the trial cut off, failed and replaced


@pytest.mark.realdata
def test_two_worker_processes_share_the_cores_and_the_cap(real_env, tmp_path):
    spec_path = write_spec(
        tmp_path / "spec", base_config=REAL_BASE, run_cap=6, parameters=REAL_PARAMS
    )
    env = {**os.environ, "MNIST_MLP_HOME": str(real_env)}
    proc = _mlp_sweep(
        [str(spec_path), "--out", str(tmp_path / "sw"), "--workers", "2", "--json"], env, tmp_path
    )
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    _, rows = _read(tmp_path / "sw")
    # two workers, each its own seed
    assert len(rows) == 6 and len({r["sampler_seed"] for r in rows}) == 2
    assert json.loads(out)["best"]["test_accuracy"] > 0.8


# --- a real PostgreSQL server, as machines sharing a study would use it ---------------------------


def _pg_bin() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if found:
        return found[-1].parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


@pytest.fixture(scope="module")
def postgres():
    """A throwaway PostgreSQL server on 127.0.0.1 (as an unprivileged user when run as root)."""
    import pwd
    import socket as sock_mod

    binaries = _pg_bin()
    require(
        binaries is not None,
        "PostgreSQL test: no initdb found (apt-get install postgresql, as .ci/run does)",
    )
    pytest.importorskip("psycopg", reason="the sweep extra's psycopg is not installed")
    import tempfile

    # Not under pytest's own folder: its parents are private to root, and the server's user
    # must reach it.
    root = Path(tempfile.mkdtemp(prefix="mnist-mlp-pg-"))
    data = root / "data"
    prefix: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        user = next((u for u in ("postgres", "nobody") if _has_user(u)), None)
        require(
            user is not None,
            "PostgreSQL test: running as root and no unprivileged user to run the server",
        )
        uid, gid = pwd.getpwnam(user).pw_uid, pwd.getpwnam(user).pw_gid
        os.chown(root, uid, gid)
        os.chmod(root, 0o755)
        prefix = (
            ["runuser", "-u", user, "--"]
            if shutil.which("runuser")
            else ["su", "-s", "/bin/sh", user, "-c"]
        )
    with sock_mod.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    def run_as(*cmd):
        full = [*prefix, *cmd] if prefix[:1] != ["su"] else [*prefix, " ".join(cmd)]
        return subprocess.run(full, capture_output=True, text=True, timeout=120)

    init = run_as(
        str(binaries / "initdb"), "-D", str(data), "-A", "trust", "-U", "mlp", "--no-sync"
    )
    assert init.returncode == 0, init.stderr
    listen = ["127.0.0.1"]

    def pg_ctl(*args: str, also: str | None = None) -> None:
        if also is not None:  # another address to listen on, whose clients are trusted
            listen.append(also)
            with open(data / "pg_hba.conf", "a") as hba:
                hba.write(f"host all all {also}/24 trust\n")
        options = f"-p {port} -k {root} -c listen_addresses={','.join(listen)} -c fsync=off"
        done = run_as(
            str(binaries / "pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(root / "log"),
            "-w",
            "-o",
            options,
            "-m",
            "fast",
            *args,
        )
        assert done.returncode == 0, done.stderr + (root / "log").read_text()

    pg_ctl("start")
    try:
        yield Server(f"postgresql://mlp@127.0.0.1:{port}/postgres", pg_ctl)
    finally:
        run_as(str(binaries / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)


class Server(str):
    """The server's URL, which can also ``restart()``, ``stop()`` and ``start()`` it."""

    def __new__(cls, url: str, pg_ctl):
        server = super().__new__(cls, url)
        server.pg_ctl = pg_ctl
        return server

    def restart(self) -> None:
        self.pg_ctl("restart")

    def stop(self) -> None:
        self.pg_ctl("stop")

    def start(self) -> None:
        self.pg_ctl("start")

    def listen_also(self, address: str) -> str:
        """Restart listening on ``address`` too; the URL to reach it there."""
        self.pg_ctl("restart", also=address)
        return self.replace("127.0.0.1", address)


def _has_user(name: str) -> bool:
    import pwd

    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def test_workers_creating_one_study_at_the_same_moment_on_postgresql(
    postgres, tiny_as_mnist, tmp_path
):
    spec = sweep.load_spec(write_spec(tmp_path / "spec", name="race"))
    url = sweep.storage_url(postgres, tmp_path)
    errors, studies = [], []

    def create():
        try:
            studies.append(sweep.create_study(spec, sweep.open_storage(url)))
        except Exception as exc:  # pragma: no cover - the failure this test guards against
            errors.append(exc)

    threads = [threading.Thread(target=create) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors and len(studies) == 4
    assert len({s._study_id for s in studies}) == 1


def test_a_sweep_on_postgresql_from_two_machines(postgres, real_env, tmp_path):
    spec_path = write_spec(
        tmp_path / "spec", base_config=REAL_BASE, run_cap=6, name="machines", parameters=REAL_PARAMS
    )
    procs = []
    # separate caches and folders, as on two machines; one BLAS thread each
    for machine in ("a", "b"):
        env = {
            **os.environ,
            "MNIST_MLP_HOME": str(tmp_path / f"cache-{machine}"),
            "OPENBLAS_NUM_THREADS": "1",
            "MNIST_MLP_MIRROR": os.environ["MNIST_MLP_MIRROR"],
        }
        procs.append(
            _mlp_sweep(
                [
                    str(spec_path),
                    "--out",
                    str(tmp_path / f"sw-{machine}"),
                    "--storage",
                    postgres,
                    "--json",
                    "--quiet",
                ],
                env,
                tmp_path,
            )
        )
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [e for _, e in outs]
    study = _study(tmp_path, spec_path, postgres)
    counted = [t for t in study.get_trials() if not t.user_attrs.get("discarded")]
    assert len([t for t in counted if t.state.name in ("COMPLETE", "PRUNED")]) == 6
    folders = [t.user_attrs["worker"]["folder"] for t in counted]
    assert len(set(folders)) == len(folders)  # no trial run twice
    # both machines ran trials
    assert {Path(f).parent.parent.name for f in folders} == {"sw-a", "sw-b"}


def test_trials_that_fail_of_themselves_use_up_their_places(tiny_as_mnist, tmp_path):
    spec_path = write_spec(
        tmp_path / "spec", run_cap=3, parameters={"training.lr": {"values": [1.0e6]}}
    )
    summary = sweep.sweep(
        spec_path, out=tmp_path / "sw", progress=False, log=lambda s: None, seed=8
    )
    assert (
        summary["trials"] == {"complete": 0, "pruned": 0, "fail": 3, "running": 0}
        and summary["best"] is None
    )
    _, rows = _read(tmp_path / "sw")
    assert [r["state"] for r in rows] == ["fail"] * 3
    study = _study(tmp_path / "sw", spec_path)
    assert all("the loss became" in t.user_attrs["failed_because"] for t in study.get_trials())


def _counts_and_numbers(study):
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    states = [t.state for t in trials if not t.user_attrs.get("discarded")]
    return {s.name: states.count(s) for s in TrialState}, trials


def _after_the_first_trial(folder, spec_path, url, timeout=60.0):
    """Wait until the study holds a finished trial (while the next one runs). One storage for
    all the polling: each one opened holds connections of its own."""
    deadline = time.monotonic() + timeout
    time.sleep(0.5)  # the sweep creates the study first
    study = _study(folder, spec_path, url)
    while time.monotonic() < deadline:
        counts, _ = _counts_and_numbers(study)
        if counts.get("COMPLETE"):
            return
        time.sleep(0.1)
    raise AssertionError("no trial finished")


def test_a_sweep_outlives_a_restart_of_its_postgresql(
    postgres, tiny_as_mnist, tmp_path, monkeypatch
):
    # trials of about a second each (tiny data, many epochs), the server restarted in the middle
    base = {**TINY_BASE, "training": {**TINY_BASE["training"], "epochs": 1500}}
    spec_path = write_spec(tmp_path / "spec", base_config=base, run_cap=4, name="restart")
    outcome: dict = {}

    def run():
        try:
            outcome["summary"] = sweep.sweep(
                spec_path,
                storage=postgres,
                out=tmp_path / "sw",
                progress=False,
                log=lambda s: None,
                seed=3,
            )
        except Exception as exc:  # pragma: no cover - the failure this test guards against
            outcome["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    _after_the_first_trial(tmp_path / "sw", spec_path, postgres)
    assert thread.is_alive()  # the study is under way
    postgres.restart()  # connections dropped; the pool notices before using one again
    thread.join(240)
    assert "error" not in outcome, outcome.get("error")
    counts, trials = _counts_and_numbers(_study(tmp_path / "sw", spec_path, postgres))
    print(f"after a restart: {counts}")
    assert counts["COMPLETE"] == 4 and counts["RUNNING"] == 0 and counts["FAIL"] == 0, counts
    assert len({t.number for t in trials}) == len(trials)  # no trial run twice
    assert outcome["summary"]["trials"]["complete"] == 4


@pytest.mark.realdata
def test_a_worker_cut_off_for_too_long_stops_in_one_line_and_the_same_command_resumes(
    postgres, real_env, tmp_path
):
    # As a user runs it: mlp sweep in a process of its own, its database stopped mid-study for
    # longer than the stated limit (3 s here, by MNIST_MLP_DB_OUTAGE_S), then started again.
    base = {**REAL_BASE, "training": {**REAL_BASE["training"], "epochs": 6}}
    spec_path = write_spec(
        tmp_path / "spec", base_config=base, run_cap=4, name="cut", parameters=REAL_PARAMS
    )
    env = {**os.environ, "MNIST_MLP_DB_OUTAGE_S": "3", "OPENBLAS_NUM_THREADS": "1"}
    args = [str(spec_path), "--out", str(tmp_path / "sw"), "--storage", postgres, "--quiet"]
    proc = _mlp_sweep(args, env, tmp_path)
    _after_the_first_trial(tmp_path / "sw", spec_path, postgres, timeout=120)
    assert proc.poll() is None  # the study is under way
    postgres.stop()
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, err
    assert "Traceback" not in err
    line = err.strip().splitlines()[-1]
    assert "has not answered for 3 s" in line and "run the same command again" in line, err
    postgres.start()
    again = _mlp_sweep([*args[:-1], "--json"], env, tmp_path)
    out, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    summary = json.loads(out)
    counts, trials = _counts_and_numbers(_study(tmp_path / "sw", spec_path, postgres))
    print(f"cut off, then resumed: {counts}; first exit 1: {line}")
    assert counts["RUNNING"] == 0, counts  # the trial cut off was found dead and failed
    assert counts["COMPLETE"] == 4 == summary["trials"]["complete"], counts
    assert counts["FAIL"] <= 1, counts  # at most the one cut off; its place went to a new trial
    assert len({t.number for t in trials}) == len(trials)


@pytest.fixture
def cut_off_host():
    """A second host: a network namespace joined to this one by a veth pair, whose link a test
    can take down and up (the project's own test host; nothing else is reached)."""
    require(
        os.geteuid() == 0 and shutil.which("ip") is not None,
        "network test: making a namespace needs root and iproute2's ip",
    )
    name, here, there = f"mlp{os.getpid() % 10000}", "10.213.7.1", "10.213.7.2"

    def ip(*args, check=True):
        return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)

    ip("netns", "add", name)
    try:
        ip("link", "add", f"{name}h", "type", "veth", "peer", "name", f"{name}w")
        ip("link", "set", f"{name}w", "netns", name)
        ip("addr", "add", f"{here}/24", "dev", f"{name}h")
        ip("link", "set", f"{name}h", "up")
        ip("netns", "exec", name, "ip", "addr", "add", f"{there}/24", "dev", f"{name}w")
        ip("netns", "exec", name, "ip", "link", "set", f"{name}w", "up")
        ip("netns", "exec", name, "ip", "link", "set", "lo", "up")

        class Host:
            address = here  # where the worker reaches this machine

            @staticmethod
            def run(cmd: list[str], env: dict, cwd: Path) -> subprocess.Popen:
                return subprocess.Popen(
                    ["ip", "netns", "exec", name, *cmd],
                    env=env,
                    cwd=cwd,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )

            @staticmethod
            def link(state: str) -> None:
                ip("link", "set", f"{name}h", state)

        yield Host
    finally:
        ip("link", "del", f"{name}h", check=False)
        ip("netns", "del", name, check=False)


@pytest.mark.realdata
def test_a_worker_cut_off_from_its_database_for_a_while_carries_on(
    postgres, real_env, tmp_path, cut_off_host
):
    # The worker runs on another host (a network namespace); its link goes down for 25 s,
    # longer than a query's 15 s TCP timeout, shorter than the 60 s limit set here.
    url = postgres.listen_also(cut_off_host.address)
    base = {**REAL_BASE, "training": {**REAL_BASE["training"], "epochs": 6}}
    spec_path = write_spec(
        tmp_path / "spec", base_config=base, run_cap=4, name="partition", parameters=REAL_PARAMS
    )
    env = {**os.environ, "MNIST_MLP_DB_OUTAGE_S": "60", "OPENBLAS_NUM_THREADS": "1"}
    proc = cut_off_host.run(
        [
            sys.executable,
            "-m",
            "mnist_mlp",
            "sweep",
            str(spec_path),
            "--out",
            str(tmp_path / "sw"),
            "--storage",
            url,
            "--json",
            "--quiet",
        ],
        env,
        tmp_path,
    )
    _after_the_first_trial(tmp_path / "sw", spec_path, postgres, timeout=120)
    assert proc.poll() is None  # the study is under way
    cut_off_host.link("down")
    time.sleep(25)
    assert proc.poll() is None  # it waited for the database rather than giving up or failing
    cut_off_host.link("up")
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err
    counts, trials = _counts_and_numbers(_study(tmp_path / "sw", spec_path, postgres))
    print(f"cut off for 25 s: {counts}")
    assert counts["COMPLETE"] == 4 == json.loads(out)["trials"]["complete"], counts
    assert counts["RUNNING"] == 0 and counts["FAIL"] == 0, counts
    assert len({t.number for t in trials}) == len(trials)
