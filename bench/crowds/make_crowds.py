"""Simulated crowds with known truth, written as ``answers.csv`` / ``truth.csv`` folders.

Three crowds, each seeded (the same files on every run), each built to stress one thing that
real crowds do and the two real ones (duck, dog) do not cover:

- ``imbalanced3``: binary, the positive class about 8× rarer than the negative (11%), exactly 3
  answers per item, 2,000 items, 60 workers with varied skill (most good, some mediocre, a
  sixth near random) and a heavy-tailed workload (every worker answers dozens to hundreds of
  items). The rare class is also harder to see (sensitivity below specificity), and a seventh of
  the items are hard (every worker's skill shrunk halfway towards chance).
- ``manyclass8``: 8 classes in 4 pairs of look-alikes (0/1, 2/3, 4/5, 6/7) with unequal
  prevalence, 1,500 items, 5–10 answers per item (uniform), 100 workers. A worker's mistakes
  go mostly (75%) to the look-alike of the true class and the rest evenly to the others.
- ``spammers3``: 3 classes (50/30/20%), 1,000 items, 7 answers per item, 50 workers of whom
  40% are spammers: half answer uniformly at random, half always give the same label; the
  others are right 65–90% of the time. Spammers work as much as anyone.

Answers are written in arrival order: items are released one after another and each answer
arrives after an exponential delay, so an item's answers interleave with its neighbours'.

    .venv/bin/python bench/crowds/make_crowds.py [--out bench/crowds/data]
"""

from __future__ import annotations

import argparse
import csv
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parent / "data"


@dataclass
class Crowd:
    """Answers in arrival order and the truth of every item."""

    items: np.ndarray  # int item index per answer
    workers: np.ndarray  # int worker index per answer
    answers: np.ndarray  # int label per answer
    truth: np.ndarray  # int label per item


def _activity(rng: np.random.Generator, n_workers: int, sigma: float = 0.8) -> np.ndarray:
    """Heavy-tailed (log-normal) share of the work each worker does."""
    w = rng.lognormal(0.0, sigma, n_workers)
    return w / w.sum()


def _assign(rng: np.random.Generator, counts: np.ndarray, share: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(item, worker) pairs: item i gets counts[i] distinct workers drawn by ``share``."""
    items = np.repeat(np.arange(counts.size), counts)
    workers = np.concatenate([rng.choice(share.size, size=c, replace=False, p=share) for c in counts])
    return items, workers


def _arrival_order(rng: np.random.Generator, items: np.ndarray, n_items: int) -> np.ndarray:
    """A permutation of the answers: item i released at time i, each answer after Exp(20) more."""
    release = rng.permutation(n_items).astype(float)
    times = release[items] + rng.exponential(20.0, items.size)
    return np.argsort(times, kind="stable")


def _answer(rng: np.random.Generator, confusion: np.ndarray, items: np.ndarray, workers: np.ndarray,
            truth: np.ndarray) -> np.ndarray:
    """Draw each answer from its worker's confusion row for the item's truth (workers × K × K)."""
    rows = confusion[workers, truth[items]]
    cum = rows.cumsum(axis=1)
    u = rng.random(items.size)[:, None]
    return np.minimum((u > cum).sum(axis=1), confusion.shape[2] - 1)


def _finish(rng: np.random.Generator, items: np.ndarray, workers: np.ndarray, answers: np.ndarray,
            truth: np.ndarray) -> Crowd:
    order = _arrival_order(rng, items, truth.size)
    return Crowd(items[order], workers[order], answers[order], truth)


def imbalanced3(seed: int = 1) -> Crowd:
    rng = np.random.default_rng(seed)
    n_items, n_workers = 2000, 60
    truth = (rng.random(n_items) < 1 / 9).astype(np.int64)  # positives ~8x rarer than negatives
    kind = rng.choice(3, size=n_workers, p=[0.6, 0.25, 0.15])  # good, mediocre, near random
    spec = np.select([kind == 0, kind == 1], [rng.uniform(0.85, 0.97, n_workers),
                                              rng.uniform(0.68, 0.82, n_workers)],
                     rng.uniform(0.5, 0.6, n_workers))
    sens = np.clip(spec - rng.uniform(0.0, 0.15, n_workers), 0.5, None)  # the rare class is harder
    hard = rng.random(n_items) < 1 / 7
    items, workers = _assign(rng, np.full(n_items, 3), _activity(rng, n_workers))
    right_p = np.where(truth[items] == 1, sens[workers], spec[workers])
    right_p = np.where(hard[items], 0.5 + (right_p - 0.5) / 2, right_p)
    right = rng.random(items.size) < right_p
    answers = np.where(right, truth[items], 1 - truth[items])
    return _finish(rng, items, workers, answers, truth)


def manyclass8(seed: int = 2) -> Crowd:
    rng = np.random.default_rng(seed)
    n_items, n_workers, k = 1500, 100, 8
    prevalence = np.array([0.22, 0.14, 0.16, 0.08, 0.14, 0.10, 0.10, 0.06])
    truth = rng.choice(k, size=n_items, p=prevalence)
    accuracy = rng.beta(6, 2.2, n_workers).clip(0.4, 0.95)  # mean ~0.73
    sibling = np.arange(k) ^ 1
    confusion = np.empty((n_workers, k, k))
    for w in range(n_workers):
        wrong = 1 - accuracy[w]
        # this worker's own lean: how much of its error goes to the look-alike (60-90%)
        to_sibling = rng.uniform(0.6, 0.9)
        for t in range(k):
            row = np.full(k, wrong * (1 - to_sibling) / (k - 2))
            row[sibling[t]] = wrong * to_sibling
            row[t] = accuracy[w]
            confusion[w, t] = row
    counts = rng.integers(5, 11, n_items)
    items, workers = _assign(rng, counts, _activity(rng, n_workers))
    answers = _answer(rng, confusion, items, workers, truth)
    return _finish(rng, items, workers, answers, truth)


def spammers3(seed: int = 3) -> Crowd:
    rng = np.random.default_rng(seed)
    n_items, n_workers, k = 1000, 50, 3
    truth = rng.choice(k, size=n_items, p=[0.5, 0.3, 0.2])
    confusion = np.empty((n_workers, k, k))
    kind = rng.permutation(np.repeat([0, 1, 2], [30, 10, 10]))  # honest, uniform spammer, one-label spammer
    for w in range(n_workers):
        if kind[w] == 0:
            acc = rng.uniform(0.65, 0.9)
            confusion[w] = np.full((k, k), (1 - acc) / (k - 1))
            np.fill_diagonal(confusion[w], acc)
        elif kind[w] == 1:
            confusion[w] = 1.0 / k
        else:
            confusion[w] = 0.0
            confusion[w][:, rng.integers(k)] = 1.0
    items, workers = _assign(rng, np.full(n_items, 7), _activity(rng, n_workers))
    answers = _answer(rng, confusion, items, workers, truth)
    return _finish(rng, items, workers, answers, truth)


CROWDS: dict[str, Callable[[], Crowd]] = {
    "imbalanced3": imbalanced3,
    "manyclass8": manyclass8,
    "spammers3": spammers3,
}


def write(crowd: Crowd, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "answers.csv", "w", newline="") as handle:
        out = csv.writer(handle)
        out.writerow(["question", "worker", "answer"])
        out.writerows(zip((f"q{i}" for i in crowd.items), (f"w{w}" for w in crowd.workers),
                          crowd.answers.tolist(), strict=True))
    with open(folder / "truth.csv", "w", newline="") as handle:
        out = csv.writer(handle)
        out.writerow(["question", "truth"])
        out.writerows((f"q{i}", int(t)) for i, t in enumerate(crowd.truth))


def make_all(out: Path = DATA) -> list[Path]:
    """Write every crowd under ``out``; returns their folders."""
    folders = []
    for name, build in CROWDS.items():
        write(build(), out / name)
        folders.append(out / name)
    return folders


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DATA)
    args = parser.parse_args()
    for folder in make_all(args.out):
        n = len((folder / "answers.csv").read_text().splitlines()) - 1
        print(f"{folder}: {n} answers")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
