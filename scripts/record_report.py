"""What `make record` made: the committee and the single net, on the test set, said last.

    python scripts/record_report.py [runs/record] [--json]

Reads ``committee/summary.json`` (the committee sweep's members) and ``single/checkpoint.npz``
(the distilled student), and prints each member's validation and test accuracy, the
committee's, the single net's, the test digits each gets wrong, and McNemar's exact test
between the single net and the committee (a p-value above 0.05: the difference is within what
chance would give on 10,000 digits).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", nargs="?", default="runs/record")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from mnist_mlp import distill, evaluation, metrics

    folder = Path(args.folder)
    members = distill.members_of(str(folder / "committee"))
    on = {s: evaluation.evaluate_committee(members, s, progress=False) for s in ("val", "test")}
    single = folder / "single" / "checkpoint.npz"
    rows = [
        {"name": f"member {Path(p).parent.name}", "val": v["accuracy"], "test": t["accuracy"]}
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
    if args.json:
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
