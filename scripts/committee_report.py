"""A committee against its members, on the validation split (to choose) and the test split (to
report once): accuracy, digits wrong, test-time augmentation, McNemar's test.

    python scripts/committee_report.py A.npz B.npz ... [--tta 1,5,9] [--json]

For each member and for the committee: validation and test accuracy and test digits wrong, for
each --tta count (views of each digit, mnist_mlp.tta); then McNemar's exact test between the
committee and its best member on validation (chosen on validation, compared on test).
"""

from __future__ import annotations

import argparse
import json
import sys


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoints", nargs="+")
    parser.add_argument("--tta", default="1")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from mnist_mlp import evaluation, metrics

    counts = [int(n) for n in args.tta.split(",")]
    rows = []
    for n in counts:
        on = {
            split: evaluation.evaluate_committee(args.checkpoints, split, False, n)
            if len(args.checkpoints) > 1
            else evaluation.evaluate_checkpoint(args.checkpoints[0], split, False, n)
            for split in ("val", "test")
        }
        rows.append({"tta": n, "val": on["val"], "test": on["test"]})
    result: dict = {"tta": []}
    for row in rows:
        members = row["val"].get("members", [])
        entry = {
            "tta": row["tta"],
            "committee": {
                "val_accuracy": row["val"]["accuracy"],
                "test_accuracy": row["test"]["accuracy"],
                "test_wrong": round((1 - row["test"]["accuracy"]) * row["test"]["n"]),
            },
            "members": [
                {
                    "checkpoint": m["checkpoint"],
                    "val_accuracy": m["accuracy"],
                    "test_accuracy": t["accuracy"],
                    "test_wrong": round((1 - t["accuracy"]) * row["test"]["n"]),
                }
                for m, t in zip(members, row["test"].get("members", []))
            ],
        }
        result["tta"].append(entry)
    result["mcnemar"] = _mcnemar(args.checkpoints, metrics, evaluation)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    for entry in result["tta"]:
        print(f"tta {entry['tta']}:")
        for m in entry["members"]:
            print(
                f"  {m['checkpoint']:<60} val {100 * m['val_accuracy']:.2f}%  test "
                f"{100 * m['test_accuracy']:.2f}% ({m['test_wrong']} wrong)"
            )
        c = entry["committee"]
        print(
            f"  {'the committee':<60} val {100 * c['val_accuracy']:.2f}%  test "
            f"{100 * c['test_accuracy']:.2f}% ({c['test_wrong']} wrong)"
        )
    mc = result["mcnemar"]
    if mc:
        print(
            f"McNemar, committee against its best member on validation ({mc['best']}), on test: "
            f"{mc['committee_only']} digits only the committee got right, {mc['member_only']} only "
            f"the member; p = {mc['p']:.3f}"
        )
    return 0


def _mcnemar(paths, metrics, evaluation) -> dict | None:
    """The committee against the member best on validation, on the test digits (no TTA)."""
    if len(paths) < 2:
        return None
    val = evaluation.evaluate_committee(paths, "val", False)
    best = max(val["members"], key=lambda m: m["accuracy"])["checkpoint"]
    member = evaluation.evaluate_on(best, "test", False)
    test = evaluation.evaluate_committee(paths, "test", False)
    labels = member.split.labels
    committee_right = (
        metrics.of_probabilities(
            metrics.committee(
                [evaluation.evaluate_on(p, "test", False).metrics.probabilities for p in paths]
            ),
            labels,
        ).predictions
        == labels
    )
    member_right = member.metrics.predictions == labels
    result = metrics.mcnemar(committee_right, member_right)
    assert abs(committee_right.mean() - test["accuracy"]) < 1e-9  # the same committee
    return {
        "best": best,
        "committee_only": result["a_only"],
        "member_only": result["b_only"],
        "p": result["p"],
    }


if __name__ == "__main__":
    sys.exit(main())
