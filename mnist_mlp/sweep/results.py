"""What a person reads of a sweep: ``results.csv``, ``best.yaml`` (the best trial, tested once)
and ``summary.json``."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from mnist_mlp import config as config_mod
from mnist_mlp import evaluation
from mnist_mlp.fsutil import atomic_write
from mnist_mlp.sweep.spec import Spec, _decode
from mnist_mlp.sweep.study import _counts, _optuna, _worker

RESULT_COLUMNS = ("number", "state", "value", "epochs", "seconds", "host", "sampler_seed")


def results(study, spec: Spec) -> list[dict]:
    """One row per trial: number, state, parameters, best validation metric, epochs, seconds,
    host."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        if t.user_attrs.get("discarded"):
            continue
        row = {
            "number": t.number,
            "state": t.state.name.lower(),
            "value": t.value if t.value is not None else _best_reported(t, spec),
            "epochs": t.user_attrs.get("run", {}).get("epochs", len(t.intermediate_values)),
            "seconds": t.user_attrs.get("run", {}).get("seconds"),
            "host": _worker(t).get("host"),
            "sampler_seed": _worker(t).get("sampler_seed"),
        }
        for p in spec.parameters:
            row[p.key] = _decode(t.params[p.key]) if p.key in t.params else None
        rows.append(row)
    return rows


def _best_reported(t, spec: Spec):
    values = list(t.intermediate_values.values())
    if not values:
        return None
    return max(values) if spec.goal == "maximize" else min(values)


def write_results(study, spec: Spec, folder: Path) -> list[dict]:
    """``results.csv`` from the study (atomically: several workers may write it)."""
    rows = results(study, spec)
    columns = [*RESULT_COLUMNS[:3], *(p.key for p in spec.parameters), *RESULT_COLUMNS[3:]]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: json.dumps(v) if isinstance(v, list) else v for k, v in row.items()})
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(folder / "results.csv", buf.getvalue().encode())
    return rows


def finish(study, spec: Spec, folder: Path, wall_s: float) -> dict:
    """After the study reached its cap: ``best.yaml``, the best trial tested once,
    ``summary.json``."""
    import yaml

    rows = write_results(study, spec, folder)
    counts = _counts(study)
    summary: dict = {
        "name": spec.name,
        "folder": str(folder),
        "metric": spec.metric,
        "goal": spec.goal,
        "method": spec.method,
        "run_cap": spec.run_cap,
        "trials": counts,
        "wall_seconds": wall_s,
        "parameters": {p.key: p.distribution for p in spec.parameters},
        "epochs_run": sum(int(r["epochs"] or 0) for r in rows),
        "best": None,
    }
    if counts["complete"]:
        best = study.best_trial
        values = {
            p.key: _decode(best.params[p.key]) for p in spec.parameters if p.key in best.params
        }
        config = spec.config_for(values)
        tree = config_mod.to_dict(config)
        header = (
            f"# The best trial (number {best.number}) of sweep {spec.name}: {spec.metric} "
            f"{best.value:.4f}.\n"
            f"# Every key resolved, seed included: mlp train --config best.yaml reproduces it.\n"
        )
        atomic_write(
            folder / "best.yaml",
            (header + yaml.safe_dump(tree, sort_keys=False)).encode(),
        )
        summary["best"] = {
            "number": best.number,
            "value": best.value,
            "params": values,
            "host": _worker(best).get("host"),
            "folder": _worker(best).get("folder"),
        }
        ckpt = Path(_worker(best).get("folder", "")) / "checkpoint.npz"
        if ckpt.exists():
            e = evaluation.evaluate_on(ckpt, "test", progress=False)
            summary["best"]["test_accuracy"] = e.metrics.accuracy
            summary["best"]["test_loss"] = e.metrics.loss
        else:
            summary["best"]["test_accuracy"] = None
            summary["best"]["note"] = (
                f"its checkpoint is on {_worker(best).get('host')}, not here: mlp eval {ckpt} there"
            )
        summary["importances"] = _importances(study)
    if spec.committee:
        summary["committee"] = committee_of(study, folder)
    atomic_write(folder / "summary.json", json.dumps(summary, indent=2).encode())
    return summary


def _member_checkpoint(trial, folder: Path) -> Path:
    """Where trial ``trial``'s checkpoint is on this machine (see :func:`committee_of`)."""
    gathered = folder / "trials" / str(trial.number) / "checkpoint.npz"
    if gathered.exists():
        return gathered
    return Path(_worker(trial).get("folder", "")) / "checkpoint.npz"


def committee_of(study, folder: Path) -> dict:
    """The completed trials on this machine as one committee: its accuracy on the validation
    split (what a choice among committees may look at) and, once, on the test split; each
    member's checkpoint and figures. A member is looked for in ``folder``'s ``trials/<number>``
    (where members gathered from other machines land), then where its worker trained it."""
    from optuna.trial import TrialState

    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    paths = [_member_checkpoint(t, folder) for t in done]
    here = [(t, p) for t, p in zip(done, paths) if p.exists()]
    out: dict = {"members": [], "missing": len(done) - len(here)}
    if not here:
        return out
    on = {s: evaluation.evaluate_committee([p for _, p in here], s, False) for s in ("val", "test")}
    out["members"] = [
        {"number": t.number, "checkpoint": str(p), "val_accuracy": v["accuracy"],
         "test_accuracy": w["accuracy"]}
        for (t, p), v, w in zip(here, on["val"]["members"], on["test"]["members"])
    ]  # fmt: skip
    for split, report in on.items():
        out[f"{split}_accuracy"], out[f"{split}_loss"] = report["accuracy"], report["loss"]
    out["test_errors"] = round((1 - report["accuracy"]) * report["n"])
    return out


def _importances(study) -> dict[str, float]:
    import warnings

    optuna = _optuna()
    try:
        # with a handful of trials PED-ANOVA says it cannot tell them apart
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return {k: float(v) for k, v in optuna.importance.get_param_importances(study).items()}
    except (RuntimeError, ValueError, ZeroDivisionError):  # too few trials, or nothing varied
        return {}
