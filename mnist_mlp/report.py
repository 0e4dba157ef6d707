"""Pictures of a training run: learning curves, confusion matrix, the most confident mistakes.

``mlp report`` writes ``curves.png``, ``confusion.png``, ``mistakes.png``, ``units.png`` (what
the first layer's most-used hidden units respond to) and a self-contained ``report.html``
(images embedded) into the run folder. The plots (:mod:`mnist_mlp.plots`) use matplotlib, an
optional extra (``pip install mnist-mlp[plot]``); the digit grids use Pillow.
"""

from __future__ import annotations

import base64
import html
import os
from pathlib import Path

import numpy as np

from mnist_mlp import evaluation, model
from mnist_mlp import metrics as metrics_mod
from mnist_mlp.errors import MlpError
from mnist_mlp.fsutil import atomic_write
from mnist_mlp.pictures import mistakes_grid, save_png, weight_grid
from mnist_mlp.plots import (
    INSTALL_HINT,
    have_matplotlib,
    plot_confusion,
    plot_curves,
    plot_importances,
    plot_runs_curves,
    plot_sweep_params,
    plot_sweep_trials,
)
from mnist_mlp.runfolder import read_metrics


def resolve(target: str | os.PathLike) -> tuple[Path, Path]:
    """(run folder, checkpoint) from a run folder or a checkpoint file."""
    target = Path(target)
    if target.is_dir():
        ckpt = target / "checkpoint.npz"
        if not ckpt.exists():
            raise MlpError(f"{target} holds no checkpoint.npz; is it a run folder (runs/NAME)?")
        return target, ckpt
    if not target.exists():
        raise MlpError(f"{target}: no such run folder or checkpoint")
    return target.parent, target


def most_used_units(ckpt, images: np.ndarray, count: int = 64) -> np.ndarray:
    """Indices of the first layer's ``count`` most-used hidden units, most used first.

    A unit's use is how much it passes on: its mean activation over ``images`` (n, 784)
    uint8 times the size (L2 norm) of its outgoing weights.
    """
    from mnist_mlp import data as data_mod

    x = data_mod.scale(images, scale=ckpt.scaling[0], offset=ckpt.scaling[1])
    hidden = model.forward(ckpt.params, x, ckpt.activation).a[1]  # (n, n1)
    use = np.abs(hidden).mean(axis=0) * np.linalg.norm(ckpt.params["W2"], axis=1)  # (n1,)
    return np.argsort(-use, kind="stable")[:count]


def hidden_units(ckpt, images: np.ndarray, count: int = 64):
    """What the first layer's most-used hidden units respond to: their 28x28 weight images.

    A red pixel excites the unit, a blue one inhibits it (see :func:`most_used_units` for
    which units, measured on ``images`` (n, 784) uint8: a few thousand test digits).
    """
    w1 = ckpt.params["W1"]
    top = most_used_units(ckpt, images, count)
    return weight_grid(
        w1[:, top].T,
        [f"unit {i}" for i in top],
        title=f"What the {len(top)} most-used of the {w1.shape[1]} first-layer units respond to "
        f"(red excites, blue inhibits)",
    )


def make(
    target: str | os.PathLike, out: str | os.PathLike | None = None, progress: bool = True
) -> dict:
    """Write the report of a run (folder or checkpoint) into ``out`` (default: the run folder).

    Returns
    -------
    dict
        Paths written (``curves``, ``confusion``, ``mistakes``, ``html``) and the metrics.
    """
    if not have_matplotlib():
        raise MlpError(INSTALL_HINT)
    if is_sweep(target):
        return make_sweep(Path(target), out)
    folder, ckpt_path = resolve(target)
    e = evaluation.evaluate_on(ckpt_path, "test", progress)
    ckpt, test, metrics, cm = e.checkpoint, e.split, e.metrics, e.confusion
    out = Path(out) if out else folder
    out.mkdir(parents=True, exist_ok=True)
    classes = ckpt.classes
    name = folder.name
    rows = _history(folder, ckpt)
    written = {}
    if rows:
        written["curves"] = out / "curves.png"
        plot_curves(rows, written["curves"], f"{name}: learning curves")
    written["confusion"] = out / "confusion.png"
    plot_confusion(
        cm,
        classes,
        written["confusion"],
        f"{name}: test confusion matrix ({100 * metrics.accuracy:.2f}% correct)",
    )
    written["mistakes"] = out / "mistakes.png"
    save_png(
        mistakes_grid(test.images, test.labels, metrics.probabilities, classes), written["mistakes"]
    )
    written["units"] = out / "units.png"
    save_png(hidden_units(ckpt, test.images[:2000]), written["units"])
    per_class = metrics_mod.per_class(cm, classes)
    written["html"] = out / "report.html"
    page = _html(name, ckpt, metrics, per_class, rows, written)
    atomic_write(written["html"], page.encode())
    return {
        "paths": {k: str(v) for k, v in written.items()},
        "accuracy": metrics.accuracy,
        "loss": metrics.loss,
        "n": len(test),
    }


# --- a sweep's report -----------------------------------------------------------------------------


def is_sweep(target: str | os.PathLike) -> bool:
    """Whether ``target`` is a sweep folder (``mlp sweep``'s results.csv and summary.json)."""
    target = Path(target)
    return (
        target.is_dir() and (target / "summary.json").exists() and (target / "results.csv").exists()
    )


def read_sweep(folder: Path) -> tuple[dict, list[dict]]:
    """(summary, rows of results.csv with numbers and lists parsed)."""
    import csv
    import json

    summary = json.loads((folder / "summary.json").read_text())
    rows = []
    with open(folder / "results.csv", newline="") as f:
        for raw in csv.DictReader(f):
            row: dict = {}
            for key, text in raw.items():
                if text in ("", None):
                    row[key] = None
                elif key in ("state", "host"):
                    row[key] = text
                else:
                    try:
                        row[key] = json.loads(text)
                    except ValueError:
                        row[key] = text
            rows.append(row)
    return summary, rows


def make_sweep(folder: Path, out: str | os.PathLike | None = None, best_curves: int = 5) -> dict:
    """The pictures of a sweep: its trials, the metric against each parameter, the parameters'
    importances and the best trials' learning curves, and ``sweep.html`` with all of them."""
    summary, rows = read_sweep(folder)
    out = Path(out) if out else folder
    out.mkdir(parents=True, exist_ok=True)
    metric, goal, name = summary["metric"], summary["goal"], summary["name"]
    written = {"trials": out / "trials.png", "parameters": out / "parameters.png"}
    plot_sweep_trials(
        rows, metric, goal, written["trials"], f"sweep {name}: {metric} of each trial"
    )
    plot_sweep_params(
        rows, summary.get("parameters") or _guess_parameters(rows), metric, written["parameters"]
    )
    if summary.get("importances"):
        written["importances"] = out / "importances.png"
        plot_importances(summary["importances"], written["importances"])
    done = sorted(
        (r for r in rows if r["state"] == "complete" and r["value"] is not None),
        key=lambda r: r["value"],
        reverse=goal == "maximize",
    )[:best_curves]
    curves = {}
    for r in done:
        path = folder / "trials" / str(r["number"]) / "metrics.csv"
        if path.exists():
            curves[f"trial {r['number']} ({metric} {r['value']:.4f})"] = read_metrics(path)
    if curves:
        written["curves"] = out / "best_curves.png"
        plot_runs_curves(curves, metric, written["curves"])
    written["html"] = out / "sweep.html"
    page = _sweep_html(summary, rows, done, written)
    atomic_write(written["html"], page.encode())
    return {"paths": {k: str(v) for k, v in written.items()}, "best": summary.get("best")}


def _guess_parameters(rows: list[dict]) -> dict[str, str]:
    """The searched keys and how to draw them, from results.csv alone (a summary without them)."""
    fixed = {"number", "state", "value", "epochs", "seconds", "host", "sampler_seed"}
    out = {}
    for key in (k for k in (rows[0] if rows else {}) if k not in fixed):
        values = [r[key] for r in rows if r.get(key) is not None]
        numeric = values and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in values
        )
        spread = numeric and min(values) > 0 and max(values) / min(values) > 50
        out[key] = "log_uniform_values" if spread else "uniform" if numeric else "categorical"
    return out


def _sweep_html(summary: dict, rows: list[dict], best_rows: list[dict], written: dict) -> str:
    esc = html.escape
    params = list(summary.get("parameters", {}))
    best = summary.get("best") or {}
    t = summary["trials"]
    facts = [
        ("trials", f"{t['complete']} complete, {t['pruned']} pruned, {t['fail']} failed"),
        ("epochs run", str(summary.get("epochs_run"))),
        ("wall time", f"{summary.get('wall_seconds', 0):.0f} s (this session)"),
        ("best trial", str(best.get("number", "-"))),
        (f"best {summary['metric']}", "-" if best.get("value") is None else f"{best['value']:.4f}"),
        (
            "its test accuracy",
            "-" if best.get("test_accuracy") is None else f"{100 * best['test_accuracy']:.2f}%",
        ),
    ]
    facts_html = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in facts)
    head = "".join(
        f"<th>{esc(c)}</th>"
        for c in ["trial", "state", summary["metric"], *params, "epochs", "host"]
    )
    body = "".join(
        "<tr>"
        + "".join(
            f"<td>{esc(str(v))}</td>"
            for v in [
                r["number"],
                r["state"],
                "-" if r["value"] is None else f"{r['value']:.4f}",
                *(r.get(p) for p in params),
                r.get("epochs"),
                r.get("host"),
            ]
        )
        + "</tr>"
        for r in best_rows
    )
    figures = "".join(
        f"<figure>{_img(written[k])}</figure>"
        for k in ("trials", "parameters", "importances", "curves")
        if k in written
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>mlp report: sweep {esc(summary["name"])}</title>
<style>{PAGE_STYLE}</style></head><body>
<h1>Sweep <code>{esc(summary["name"])}</code> ({esc(summary["method"])}, {esc(summary["goal"])}
{esc(summary["metric"])})</h1>
<table>{facts_html}</table>
<h2>The best trials</h2>
<table><tr>{head}</tr>{body}</table>
<h2>Pictures</h2>
{figures}
</body></html>
"""


def _history(folder: Path, ckpt) -> list[dict]:
    """Epoch rows from the run's metrics.csv, else from the checkpoint's own history."""
    csv_path = folder / "metrics.csv"
    if csv_path.exists():
        rows = read_metrics(csv_path)
        if rows:
            return rows
    return ckpt.meta.get("history", [])


PAGE_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em;
       color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.2em; margin-top: 2em; }
table { border-collapse: collapse; }
td, th { padding: 0.25em 0.8em; border-bottom: 1px solid #ddd; text-align: right; }
th { text-align: left; } figure { margin: 1.5em 0; } img { max-width: 100%; }
pre { background: #f6f6f6; padding: 1em; overflow-x: auto; }
"""


def _img(path: Path) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(Path(path).stem)}">'


def _html(name, ckpt, metrics, per_class, rows, written) -> str:
    import yaml

    from mnist_mlp import config as config_mod

    esc = html.escape
    best = ckpt.meta.get("best", {})
    table = "".join(
        f"<tr><td>{esc(c['class'])}</td><td>{_pct(c['precision'])}</td><td>{_pct(c['recall'])}</td>"
        f"<td>{c['support']}</td></tr>"
        for c in per_class
    )
    last = rows[-1] if rows else {}
    facts = [
        ("test accuracy", f"{100 * metrics.accuracy:.2f}%"),
        ("test loss", f"{metrics.loss:.4f}"),
        ("best epoch", str(best.get("epoch", ckpt.meta.get("epoch", "?")))),
        ("best validation accuracy", _pct(best.get("val_acc"))),
        ("epochs run", str(len(rows))),
        ("training time", f"{sum(r.get('seconds') or 0 for r in rows):.0f} s"),
        ("final training accuracy", _pct(last.get("train_acc"))),
    ]
    facts_html = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in facts)
    config_text = yaml.safe_dump(config_mod.to_dict(ckpt.config), sort_keys=False)
    figures = "".join(
        f"<figure>{_img(written[k])}</figure>"
        for k in ("curves", "confusion", "mistakes", "units")
        if k in written
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>mlp report: {esc(name)}</title>
<style>{PAGE_STYLE}</style></head><body>
<h1>Run <code>{esc(name)}</code>: {100 * metrics.accuracy:.2f}% on the
{esc(ckpt.meta.get("dataset", {}).get("name", ""))} test set</h1>
<table>{facts_html}</table>
<h2>Pictures</h2>
{figures}
<h2>Per class (test set)</h2>
<table><tr><th>class</th><th>precision</th><th>recall</th><th>support</th></tr>{table}</table>
<h2>Configuration</h2>
<pre>{esc(config_text)}</pre>
</body></html>
"""


def _pct(value) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"
