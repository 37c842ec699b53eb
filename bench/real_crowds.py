"""What the simulated crowds of the benchmarks borrow from the real ones in ``../shared/data/crowds``:
each real worker's skill as an offset on the logit scale. No Django, no platform."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def logit(p: np.ndarray) -> np.ndarray:
    return np.log(p) - np.log1p(-p)


def real_worker_offsets(min_answers: int = 20) -> np.ndarray:
    """logit(accuracy) − its mean, for every real worker of the duck and dog crowds with at least
    ``min_answers`` answers on questions with truth (accuracy with one pseudo-answer each way)."""
    accuracies = []
    for crowd in ("duck", "dog"):
        with open(DATA / "crowds" / crowd / "truth.csv", encoding="utf-8") as handle:
            truth = {r["question"]: r["truth"] for r in csv.DictReader(handle)}
        right: Counter = Counter()
        seen: Counter = Counter()
        with open(DATA / "crowds" / crowd / "answers.csv", encoding="utf-8") as handle:
            for r in csv.DictReader(handle):
                if r["question"] in truth:
                    seen[r["worker"]] += 1
                    right[r["worker"]] += r["answer"] == truth[r["question"]]
        accuracies += [(right[w] + 1) / (seen[w] + 2) for w in seen if seen[w] >= min_answers]
    lg = logit(np.asarray(accuracies))
    return lg - lg.mean()
