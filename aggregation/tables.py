"""Answer tables and id indices shared by the estimators (``estimator``, ``difficulty``).

An answers table is a DataFrame or dict of columns, or rows of (subject, worker, answer); ids are
any hashable (numpy scalars become Python ones, so that state stays JSON-safe).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np

SUBJECT_COLUMNS = ("subject", "task", "question")
WORKER_COLUMNS = ("worker", "volunteer", "user")
ANSWER_COLUMNS = ("answer", "label", "value")


def _json_id(value: Any) -> Any:
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.str_):
        return str(value)
    return value


def answer_columns(table: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(subjects, workers, answers) from a DataFrame/dict of columns or (s, w, a) rows.

    Column names may be crowd-kit's (task, worker, label), the crowds' (question, worker,
    answer) or the platform's (subject, volunteer, answer).
    """
    if hasattr(table, "keys") and hasattr(table, "__getitem__"):
        keys = list(table.keys())

        def pick(names: Sequence[str]) -> np.ndarray:
            for name in names:
                if name in keys:
                    return np.asarray(table[name])
            raise KeyError(f"answers table needs one of the columns {list(names)}")

        return pick(SUBJECT_COLUMNS), pick(WORKER_COLUMNS), pick(ANSWER_COLUMNS).astype(
            np.int64)
    rows = list(table)
    if not rows:
        empty = np.empty(0, dtype=np.int64)
        return np.empty(0, dtype=object), np.empty(0, dtype=object), empty
    subjects = np.empty(len(rows), dtype=object)
    workers = np.empty(len(rows), dtype=object)
    subjects[:] = [r[0] for r in rows]
    workers[:] = [r[1] for r in rows]
    answers = np.fromiter((int(r[2]) for r in rows), dtype=np.int64, count=len(rows))
    return subjects, workers, answers


class _Index:
    """Arbitrary hashable ids ↔ dense integer indices, in order of first appearance."""

    def __init__(self) -> None:
        self.ids: list[Hashable] = []
        self.pos: dict[Hashable, int] = {}

    def __len__(self) -> int:
        return len(self.ids)

    def get(self, key: Hashable) -> int:
        idx = self.pos.get(key)
        if idx is None:
            idx = len(self.ids)
            self.pos[key] = idx
            self.ids.append(key)
        return idx

    def get_many(self, keys: np.ndarray) -> np.ndarray:
        """Indices of many ids at once (new ones appended in order of first appearance)."""
        n = keys.shape[0]
        if n == 0:
            return np.empty(0, dtype=np.int64)
        if keys.dtype.kind in "iu" and keys.min() >= 0 and keys.max() < 4 * n + 1024:
            # Small non-negative integers: a lookup table instead of a sort.
            first = np.full(int(keys.max()) + 1, n, dtype=np.int64)
            np.minimum.at(first, keys, np.arange(n))
            present = np.flatnonzero(first < n)
            uniq = present[np.argsort(first[present], kind="stable")]
            lookup = np.empty(first.shape[0], dtype=np.int64)
            lookup[uniq] = self._bulk(uniq.tolist())
            return lookup[keys]
        try:
            uniq, inverse = np.unique(keys, return_inverse=True)
        except TypeError:  # mixed types that numpy cannot sort
            return np.fromiter((self.get(k) for k in keys.tolist()), dtype=np.int64, count=n)
        inverse = inverse.reshape(-1)
        first = np.full(uniq.shape[0], n, dtype=np.int64)
        np.minimum.at(first, inverse, np.arange(n))
        order = np.argsort(first, kind="stable")
        mapped = np.empty(uniq.shape[0], dtype=np.int64)
        mapped[order] = self._bulk(uniq[order].tolist())
        return mapped[inverse]

    def _bulk(self, values: list) -> np.ndarray:
        """Indices of distinct ids given in order of first appearance."""
        pos = self.pos
        fresh = [v for v in values if v not in pos]
        base = len(self.ids)
        self.ids.extend(fresh)
        pos.update(zip(fresh, range(base, base + len(fresh)), strict=True))
        return np.fromiter((pos[v] for v in values), dtype=np.int64, count=len(values))


class IndexedAnswers:
    """What an estimator over an answers table exposes of its ids: subjects and workers in order of
    first appearance (its ``_subjects`` and ``_workers`` indices)."""

    _subjects: _Index
    _workers: _Index

    @property
    def subjects(self) -> list[Hashable]:
        return list(self._subjects.ids)

    @property
    def workers(self) -> list[Hashable]:
        return list(self._workers.ids)
