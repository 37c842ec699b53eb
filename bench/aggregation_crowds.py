"""Offline and online accuracy on the real crowds (duck, dog), with the answers each consumed.

Offline: one batch EM over every answer. Online: the answers stream in (file order, then
shuffled orders), a retired subject is fed no more, the batch refit runs every 250 answers.
"accuracy" takes each retired subject's label when it retired; "after the last refit" takes
the labels the engine holds at the end (a refit re-estimates retired subjects too, from the
answers they got). The same settings for both crowds: the CLI's default policy with the
engine's defaults, a stricter policy, and the default policy with plain-EM refits (without
``leave_one_out``) for comparison.

    .venv/bin/python bench/aggregation_crowds.py [--seeds 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from aggregation.io import read_answers, read_truth  # noqa: E402
from aggregation.replay import DEFAULT_ONLINE_POLICY, replay  # noqa: E402

CROWDS = ROOT.parent / "shared" / "data" / "crowds"
# (label, policy, estimator options): the same for both crowds.
SETTINGS = [(DEFAULT_ONLINE_POLICY, DEFAULT_ONLINE_POLICY, {}),
            ("min:3,risk:0.001", "min:3,risk:0.001", {}),
            (f"{DEFAULT_ONLINE_POLICY}, plain-EM refits", DEFAULT_ONLINE_POLICY,
             {"leave_one_out": False}),
            (f"{DEFAULT_ONLINE_POLICY}, uniform class prior (the default before issue 24)", DEFAULT_ONLINE_POLICY,
             {"learn_class_prior": False})]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    out: dict = {}
    for name in ("duck", "dog"):
        table = read_answers(CROWDS / name / "answers.csv")
        truth = read_truth(CROWDS / name / "truth.csv")
        offline, _ = replay(table, truth)
        out[name] = {"offline": offline.accuracy, "online": {}}
        print(f"{name}: offline accuracy {offline.accuracy:.4f} "
              f"({offline.n_answers} answers, {offline.seconds:.3f} s)")
        for label, policy, options in SETTINGS:
            rows = []
            for seed in [None, *range(args.seeds)]:
                res, _ = replay(table, truth, online=True, policy=policy, order_seed=seed,
                                estimator_options=options)
                rows.append({"order": "file" if seed is None else f"shuffle {seed}",
                             "accuracy": res.accuracy,
                             "accuracy_after_refit": res.accuracy_after_refit,
                             "fraction": res.fraction_consumed,
                             "retired": res.subjects_retired, "seconds": res.seconds})
            shuffled = rows[1:]
            summary = {"rows": rows,
                       "shuffled_mean_accuracy": float(np.mean([r["accuracy"] for r in shuffled])),
                       "shuffled_mean_accuracy_after_refit": float(np.mean(
                           [r["accuracy_after_refit"] for r in shuffled])),
                       "shuffled_mean_fraction": float(np.mean([r["fraction"] for r in shuffled]))}
            out[name]["online"][label] = summary
            print(f"  online, policy {label}:")
            for r in rows:
                print(f"    {r['order']:<10} accuracy {r['accuracy']:.4f} "
                      f"(after the last refit {r['accuracy_after_refit']:.4f})  answers used "
                      f"{100 * r['fraction']:5.1f}%  retired {r['retired']}  {r['seconds']:.2f} s")
            print(f"    shuffled mean: accuracy {summary['shuffled_mean_accuracy']:.4f} "
                  f"({100 * (summary['shuffled_mean_accuracy'] - offline.accuracy):+.2f} points; "
                  f"after the last refit "
                  f"{summary['shuffled_mean_accuracy_after_refit']:.4f}), "
                  f"answers used {100 * summary['shuffled_mean_fraction']:.1f}%")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
