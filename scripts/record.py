"""`make record`: the committee, then the single net distilled from it, then both, said last.

    python scripts/record.py [--folder runs/record] [--committee configs/record.yaml]
                             [--student configs/student.yaml] [--storage URL]
                             [--report-only] [--json]

1. ``mlp sweep COMMITTEE --out FOLDER/committee``: the committee's members (a sweep
   continues where it stopped; with --storage, the study several machines share, each running
   ``mlp sweep COMMITTEE --storage URL --out FOLDER/committee``: once their members are gathered
   into FOLDER/committee/trials/, this command on one machine finds the study done and goes on);
2. ``mlp train --config STUDENT --out FOLDER/single``: one net distilled from that committee
   (its ``training.teacher`` set to FOLDER/committee); continued from its ``last.npz`` if it
   was cut off, left alone if it finished;
3. the report: each member's validation and test accuracy, the committee's, the single net's,
   the test digits each gets wrong, and McNemar's exact test between the single net and the
   committee (a p-value above 0.05: the difference is within what chance gives on 10,000 digits).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def mlp(*args: str) -> None:
    """Run ``mlp ARGS`` (in this folder, as the paths given are), its output straight through;
    stop on its failure."""
    done = subprocess.run([sys.executable, "-m", "mnist_mlp", *args])
    if done.returncode:
        sys.exit(done.returncode)


def train_single(folder: Path, student: str, teacher: Path) -> None:
    """The net distilled from ``teacher`` (a committee sweep's folder) into ``folder``: started,
    continued from ``last.npz``, or left alone if finished."""
    from mnist_mlp import checkpoint, train

    last = folder / "last.npz"
    if not last.exists():
        taught = f"training.teacher=[{json.dumps(str(teacher))}]"
        mlp("train", "--config", student, "--out", str(folder), "--set", taught)
        return
    saved = checkpoint.load(last)
    state = train.State.from_meta(saved.params, saved.momentum, saved.meta)
    if state.finished(saved.config.training.epochs):
        print(f"{folder}: finished ({state.epoch} epochs)")
        return
    mlp("train", "--resume", str(last))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--folder", default="runs/record", help="where committee/ and single/ go [runs/record]"
    )
    configs = ROOT / "configs"
    parser.add_argument("--committee", default=str(configs / "record.yaml"), help="its sweep file")
    parser.add_argument("--student", default=str(configs / "student.yaml"), help="its config")
    parser.add_argument("--storage", help="the committee's study, shared (postgresql://...)")
    parser.add_argument("--report-only", action="store_true", help="train nothing, report")
    parser.add_argument("--json", action="store_true", help="the report as JSON on stdout")
    args = parser.parse_args()
    folder = Path(args.folder)
    if not args.report_only:
        shared = ["--storage", args.storage] if args.storage else []
        mlp("sweep", args.committee, "--out", str(folder / "committee"), *shared)
        train_single(folder / "single", args.student, folder / "committee")
    return report(folder, args.json)


def _view(path: str) -> str:
    """The view of the digits the member ``path`` was trained on, in a few words."""
    from mnist_mlp import checkpoint

    view = checkpoint.load(path).config.data.normalise
    return {"none": "as they are", "deslant": "deslanted"}.get(view.kind, f"width {view.width}")


def report(folder: Path, as_json: bool) -> int:
    from mnist_mlp import distill, evaluation, metrics

    members = distill.members_of(str(folder / "committee"))
    on = {s: evaluation.evaluate_committee(members, s, progress=False) for s in ("val", "test")}
    single = folder / "single" / "checkpoint.npz"
    rows = [
        {
            "name": f"member {Path(p).parent.name} ({_view(p)})",
            "val": v["accuracy"],
            "test": t["accuracy"],
        }
        for p, v, t in zip(members, on["val"]["members"], on["test"]["members"])
    ]
    rows.append({"name": f"committee of {len(members)}", "val": on["val"]["accuracy"],
                 "test": on["test"]["accuracy"]})  # fmt: skip
    out: dict = {"rows": rows}
    if single.exists():
        val = evaluation.evaluate_on(single, "val", progress=False)
        test = evaluation.evaluate_on(single, "test", progress=False)
        rows.append({"name": "single (distilled)", "val": val.metrics.accuracy,
                     "test": test.metrics.accuracy})  # fmt: skip
        labels = test.split.labels
        vote = metrics.committee(
            [
                evaluation.evaluate_on(p, "test", progress=False).metrics.probabilities
                for p in members
            ]
        ).argmax(axis=1)
        out["mcnemar"] = metrics.mcnemar(test.metrics.predictions == labels, vote == labels)
    for r in rows:
        r["test_wrong"] = round((1 - r["test"]) * on["test"]["n"])
    if as_json:
        print(json.dumps(out, indent=2))
        return 0
    for r in rows:
        print(
            f"{r['name']:<24} val {100 * r['val']:.2f}%  test {100 * r['test']:.2f}% "
            f"({r['test_wrong']} wrong)"
        )
    if "mcnemar" in out:
        print(f"McNemar, single against committee: p = {out['mcnemar']['p']:.3g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
