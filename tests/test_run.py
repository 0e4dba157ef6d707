"""Training runs on disk: files, resume, refusal to overwrite, divergence, evaluation."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from conftest import TINY_RUN, StopAfter

from mnist_mlp import checkpoint, evaluation, run, train
from mnist_mlp import data as data_mod
from mnist_mlp.config import load_config
from mnist_mlp.errors import MlpError
from mnist_mlp.fast.step import Step

TINY = TINY_RUN


def config(*extra):
    return load_config(overrides=[*TINY, *extra])


def test_a_run_writes_its_folder(tiny_as_mnist, tmp_path):
    lines = []
    result = run.train_run(config(), tmp_path / "runs" / "t", progress=False, echo=lines.append)
    folder = result.folder
    assert {p.name for p in folder.iterdir()} >= {
        "config.yaml",
        "metrics.csv",
        "checkpoint.npz",
        "last.npz",
    }
    rows = list(csv.DictReader((folder / "metrics.csv").read_text().splitlines()))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert set(rows[0]) == set(train.COLUMNS)
    assert load_config(folder / "config.yaml") == config()
    assert (tmp_path / "runs" / "latest").resolve() == folder.resolve()
    assert len(lines) == 4 and lines[-1].startswith("best epoch") and "test accuracy" in lines[-1]
    best = checkpoint.load(folder / "checkpoint.npz")
    spec = tiny_as_mnist.spec
    assert best.meta["dataset"]["name"] == "mnist"
    assert best.scaling == data_mod.scaling_for(spec.pixel_mean, spec.pixel_std)
    assert best.meta["epoch"] == best.meta["best"]["epoch"]
    assert 0 <= result.test_accuracy <= 1


def test_without_a_validation_split_the_last_epoch_is_kept_and_tested(tiny_as_mnist, tmp_path):
    lines = []
    result = run.train_run(
        config("data.validation=0"), tmp_path / "t", progress=False, echo=lines.append
    )
    rows = list(csv.DictReader((result.folder / "metrics.csv").read_text().splitlines()))
    assert [r["val_acc"] for r in rows] == ["", "", ""]
    kept = checkpoint.load(result.folder / "checkpoint.npz")
    last = checkpoint.load(result.folder / "last.npz")
    assert kept.meta["epoch"] == 3
    for key in last.params:
        np.testing.assert_array_equal(kept.params[key], last.params[key])
    assert lines[-1].startswith("last epoch 3 (no validation split): test accuracy")


def test_an_existing_run_is_not_overwritten_without_force(tiny_as_mnist, tmp_path):
    folder = tmp_path / "r"
    run.train_run(config("training.epochs=1"), folder, progress=False, echo=lambda s: None)
    before = (folder / "checkpoint.npz").read_bytes()
    with pytest.raises(MlpError, match="already holds a run; continue it with --resume"):
        run.train_run(config("training.epochs=1"), folder, progress=False, echo=lambda s: None)
    assert (folder / "checkpoint.npz").read_bytes() == before
    run.train_run(
        config("training.epochs=1", "training.seed=5"),
        folder,
        force=True,
        progress=False,
        echo=lambda s: None,
    )
    assert (folder / "checkpoint.npz").read_bytes() != before


def test_interrupt_saves_a_resumable_checkpoint_that_ends_identically(tiny_as_mnist, tmp_path):
    cfg = config("model.dropout=0.1")
    whole = run.train_run(cfg, tmp_path / "whole", progress=False, echo=lambda s: None)
    with pytest.raises(run.TrainingInterrupted) as info:
        run.train_run(
            cfg, tmp_path / "part", progress=False, echo=lambda s: None, stop=StopAfter(9)
        )
    assert info.value.exit_code == 130
    assert f"mlp train --resume {tmp_path / 'part' / 'last.npz'}" in str(info.value)
    saved = checkpoint.load(tmp_path / "part" / "last.npz")
    assert saved.meta["status"] == "interrupted" and saved.meta["batch"] > 0
    resumed = run.train_run(
        None,
        tmp_path / "part",
        resume=tmp_path / "part" / "last.npz",
        progress=False,
        echo=lambda s: None,
    )
    a = checkpoint.load(tmp_path / "whole" / "last.npz")
    b = checkpoint.load(tmp_path / "part" / "last.npz")
    for key in a.params:
        np.testing.assert_array_equal(a.params[key], b.params[key])
    assert resumed.test_accuracy == whole.test_accuracy
    rows = list(csv.DictReader((tmp_path / "part" / "metrics.csv").read_text().splitlines()))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]


def test_a_run_of_the_fast_step_resumes_through_the_textbook(tiny_as_mnist, tmp_path):
    cfg = config()
    whole = run.train_run(cfg, tmp_path / "whole", progress=False, echo=lambda s: None)
    with pytest.raises(run.TrainingInterrupted):
        run.train_run(
            cfg, tmp_path / "part", progress=False, echo=lambda s: None, stop=StopAfter(9)
        )
    assert checkpoint.load(tmp_path / "part" / "last.npz").meta["momentum_form"] == "previous"
    run.train_run(
        None,
        tmp_path / "part",
        resume=tmp_path / "part" / "last.npz",
        overrides=("training.step=reference",),
        progress=False,
        echo=lambda s: None,
    )
    done = checkpoint.load(tmp_path / "part" / "last.npz")
    assert done.config.training.step == "reference" and done.meta["momentum_form"] == "velocity"
    assert "step: reference" in (tmp_path / "part" / "config.yaml").read_text()
    a = checkpoint.load(tmp_path / "whole" / "last.npz")
    for key in a.params:  # the same arithmetic, rounded otherwise
        np.testing.assert_allclose(done.params[key], a.params[key], rtol=0, atol=1e-4)
    assert done.meta["step"] == whole.state.steps


def test_resume_can_extend_epochs_but_not_change_the_run(tiny_as_mnist, tmp_path):
    folder = tmp_path / "r"
    run.train_run(config("training.epochs=1"), folder, progress=False, echo=lambda s: None)
    with pytest.raises(MlpError, match="already finished its 1 epochs"):
        run.train_run(None, folder, resume=folder / "last.npz", progress=False, echo=lambda s: None)
    with pytest.raises(
        MlpError, match=r"only training\.epochs, training\.patience, training\.step can change"
    ):
        run.train_run(
            None,
            folder,
            resume=folder / "last.npz",
            overrides=("training.lr=1",),
            progress=False,
            echo=lambda s: None,
        )
    result = run.train_run(
        None,
        folder,
        resume=folder / "last.npz",
        overrides=("training.epochs=2",),
        progress=False,
        echo=lambda s: None,
    )
    assert result.state.epoch == 2


def test_divergence_leaves_the_good_checkpoints_intact(tiny_as_mnist, tmp_path, monkeypatch):
    folder = tmp_path / "r"
    run.train_run(config("training.epochs=1"), folder, progress=False, echo=lambda s: None)
    good = {n: (folder / n).read_bytes() for n in ("checkpoint.npz", "last.npz")}
    real_call = Step.__call__
    calls = {"n": 0}

    def poisoned(self, x, y, lr, rng):
        calls["n"] += 1
        loss, pred = real_call(self, x, y, lr, rng)
        return (float("nan") if calls["n"] > 3 else loss), pred

    monkeypatch.setattr(Step, "__call__", poisoned)
    with pytest.raises(train.TrainingDiverged, match="the loss became nan at epoch 2"):
        run.train_run(
            None,
            folder,
            resume=folder / "last.npz",
            overrides=("training.epochs=3",),
            progress=False,
            echo=lambda s: None,
        )
    assert {n: (folder / n).read_bytes() for n in good} == good


def test_evaluate_checkpoint(tiny_as_mnist, tmp_path):
    folder = tmp_path / "r"
    run.train_run(config(), folder, progress=False, echo=lambda s: None)
    r = evaluation.evaluate_checkpoint(folder / "checkpoint.npz", progress=False)
    cm = np.array(r["confusion_matrix"])
    assert r["n"] == 32 and cm.sum() == 32 and cm.shape == (10, 10)
    assert r["accuracy"] == pytest.approx(np.trace(cm) / 32)
    assert [c["support"] for c in r["per_class"]] == cm.sum(axis=1).tolist()
    assert (
        evaluation.evaluate_checkpoint(folder / "checkpoint.npz", "val", progress=False)["n"] == 16
    )


def test_a_checkpoint_of_other_data_is_refused_by_eval_report_and_resume(tiny_as_mnist, tmp_path):
    folder = tmp_path / "r"
    run.train_run(config(), folder, progress=False, echo=lambda s: None)
    for name in ("checkpoint.npz", "last.npz"):
        ckpt = checkpoint.load(folder / name)
        ckpt.meta["dataset"]["digest"] = "f" * 64  # as if trained on another version of the files
        checkpoint.save(tmp_path / name, ckpt)
    with pytest.raises(MlpError, match="was trained on other data than the cached mnist"):
        evaluation.evaluate_checkpoint(tmp_path / "checkpoint.npz", progress=False)
    with pytest.raises(MlpError, match="was trained on other data"):
        run.train_run(
            None,
            tmp_path / "resumed",
            resume=tmp_path / "last.npz",
            overrides=("training.epochs=4",),
            progress=False,
            echo=lambda s: None,
        )
    pytest.importorskip("matplotlib")
    from mnist_mlp import report

    with pytest.raises(MlpError, match="was trained on other data"):
        report.make(tmp_path / "checkpoint.npz", out=tmp_path / "report", progress=False)
    assert not (tmp_path / "report").exists()  # nothing written for a refused report


def test_a_committee_averages_its_members_probabilities(tiny_as_mnist, tmp_path):
    paths = []
    for seed in (0, 1, 2):
        folder = tmp_path / f"m{seed}"
        run.train_run(config(f"training.seed={seed}"), folder, progress=False, echo=lambda s: None)
        paths.append(folder / "checkpoint.npz")
    r = evaluation.evaluate_committee(paths, progress=False)
    evaluations = [evaluation.evaluate_on(p, progress=False) for p in paths]
    mean = sum(e.metrics.probabilities for e in evaluations) / 3
    labels = evaluations[0].split.labels
    assert r["accuracy"] == pytest.approx(np.mean(mean.argmax(axis=1) == labels))
    assert [m["accuracy"] for m in r["members"]] == [e.metrics.accuracy for e in evaluations]
    assert (
        r["checkpoint"] == [str(p) for p in paths] and np.array(r["confusion_matrix"]).sum() == 32
    )
    other = checkpoint.load(paths[1])
    other.meta["dataset"]["digest"] = "f" * 64
    checkpoint.save(tmp_path / "other.npz", other)
    with pytest.raises(
        MlpError,
        match="other.npz was trained on another copy of mnist than .*m0.checkpoint.npz "
        r"\(its checksum differs\)",
    ):
        evaluation.evaluate_committee([paths[0], tmp_path / "other.npz"], progress=False)
    other.meta["dataset"] = {"name": "fashion-mnist", "digest": "e" * 64}
    checkpoint.save(tmp_path / "fashion.npz", other)
    with pytest.raises(
        MlpError, match=r"fashion\.npz was trained on fashion-mnist, .*m0.checkpoint\.npz on mnist"
    ):
        evaluation.evaluate_committee([paths[0], tmp_path / "fashion.npz"], progress=False)
    other = checkpoint.load(paths[2])
    other.meta["classes"] = list("abcdefghij")
    checkpoint.save(tmp_path / "letters.npz", other)
    with pytest.raises(MlpError, match=r"letters.npz has the classes \['a', "):
        evaluation.evaluate_committee([paths[0], tmp_path / "letters.npz"], progress=False)
    from mnist_mlp.predict import Predictor

    committee, members = Predictor(paths), [Predictor(p) for p in paths]
    pixels = np.random.default_rng(0).random((4, 28, 28)).astype(np.float32)
    np.testing.assert_allclose(
        committee.probabilities(pixels),
        sum(m.probabilities(pixels) for m in members) / 3,
        rtol=1e-5,
        atol=1e-7,
    )
    with pytest.raises(
        MlpError, match="the members of a committee must share their dataset and classes"
    ):
        Predictor([paths[0], tmp_path / "other.npz"])


def test_a_run_with_a_moving_average_keeps_it_as_its_checkpoint_and_resumes_it(
    tiny_as_mnist, tmp_path
):
    cfg = config("training.ema=0.9")
    whole = run.train_run(cfg, tmp_path / "whole", progress=False, echo=lambda s: None)
    best = checkpoint.load(tmp_path / "whole" / "checkpoint.npz")
    last = checkpoint.load(tmp_path / "whole" / "last.npz")
    assert not best.momentum and not best.averaged  # the average is its weights
    assert last.averaged and last.momentum  # everything to resume
    if best.meta["best"]["epoch"] == last.meta["epoch"]:  # the best epoch is the last
        for key in best.params:
            np.testing.assert_array_equal(best.params[key], last.averaged[key])
    with pytest.raises(run.TrainingInterrupted):
        run.train_run(
            cfg, tmp_path / "part", progress=False, echo=lambda s: None, stop=StopAfter(9)
        )
    resumed = run.train_run(
        None, tmp_path / "part", resume=tmp_path / "part" / "last.npz", progress=False,
        echo=lambda s: None,
    )  # fmt: skip
    again = checkpoint.load(tmp_path / "part" / "last.npz")
    for key in last.params:
        np.testing.assert_array_equal(again.averaged[key], last.averaged[key])
    assert resumed.test_accuracy == whole.test_accuracy
