"""What a scientist does with the CNN's embeddings beyond classifying (Zoobot's "practical tools"):
nearest neighbours, how unusual each galaxy is, a 2-D map, and a new question learnt from a few
labels on the frozen embeddings. Plain numpy and torch, no Django.

The embeddings are ``GalaxyClassifier.embed``'s: the penultimate layer averaged over the 8
rotations and reflections of D4, so a galaxy and its rotated or mirrored copy get the same vector.
Similarity is cosine similarity: vectors are L2-normalised once (``normalise``) and compared by dot
product, which is what pgvector's ``<=>`` (cosine distance, ``1 - cos``) computes in the platform.

- ``neighbours``: the exact k nearest by cosine, blockwise (memory ``block x N``), for scoring and
  for the anomaly ranking; the platform searches with a pgvector HNSW index instead.
- ``kth_neighbour_distance``: the anomaly score, the cosine distance to the k-th nearest other
  galaxy. A galaxy like many others has close neighbours; a rare one (a merger, a lens, an artefact)
  is far even from its k-th. k > 1 so that a pair of near-duplicates is not "normal" to each other.
- ``pca_2d``: the map, the first two principal components (deterministic signs), not UMAP: no new
  dependency, and its axes mean the same from one model version to the next ranking.
- ``LinearHead``: a new question from a few hundred labels, a softmax regression on the standardised
  frozen embeddings (L2 penalty, LBFGS), seconds on a CPU; the CNN is not retrained.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch


def normalise(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm, as float32 (an all-zero row stays zero)."""
    v = np.asarray(vectors, dtype=np.float32)
    if v.ndim != 2:
        raise ValueError(f"vectors must be (N, D), got shape {v.shape}")
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    return v / np.where(norms > 0, norms, 1.0)


def neighbours(vectors: np.ndarray, k: int, queries: np.ndarray | None = None, block: int = 512,
               exclude_self: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest rows of ``vectors`` to each query by cosine: ``(indices, distances)``, both
    ``(Q, k)``, nearest first, distance ``1 - cos``. ``queries`` None: every row of ``vectors``
    against the others (``exclude_self``: a row is not its own neighbour). Exact, blockwise."""
    base = normalise(vectors)
    n = base.shape[0]
    self_query = queries is None
    q = base if self_query else normalise(queries)
    if not 1 <= k <= n - (1 if self_query and exclude_self else 0):
        raise ValueError(f"k must be in 1..{n - (1 if self_query and exclude_self else 0)}, got {k}")
    indices = np.empty((q.shape[0], k), dtype=np.int64)
    distances = np.empty((q.shape[0], k), dtype=np.float32)
    base_t, q_t = torch.from_numpy(base), torch.from_numpy(q)
    with torch.no_grad():
        for start in range(0, q.shape[0], block):
            sim = q_t[start : start + block] @ base_t.T  # torch: a threaded matmul and top-k, 10x numpy's argpartition
            if self_query and exclude_self:
                rows = torch.arange(sim.shape[0])
                sim[rows, start + rows] = -torch.inf
            top, idx = torch.topk(sim, k, dim=1, largest=True, sorted=True)
            indices[start : start + block] = idx.numpy()
            distances[start : start + block] = 1.0 - top.numpy()
    return indices, distances


def kth_neighbour_distance(vectors: np.ndarray, k: int = 5) -> np.ndarray:
    """Each row's anomaly score ``(N,)``: its cosine distance to its k-th nearest other row (k is
    lowered to ``N - 1`` for tiny sets; 0 for a set of one)."""
    n = np.asarray(vectors).shape[0]
    if n < 2:
        return np.zeros(n, dtype=np.float32)
    _, distances = neighbours(vectors, min(k, n - 1))
    return distances[:, -1].copy()


def precision_at_k(vectors: np.ndarray, labels: np.ndarray, k: int = 10, positive: int = 1) -> float:
    """The mean share of ``positive`` labels among the k nearest others of each ``positive`` row:
    how well similarity search finds more of a class from one example (random: its share)."""
    labels = np.asarray(labels)
    queries = np.flatnonzero(labels == positive)
    if queries.size == 0:
        raise ValueError(f"no row is labelled {positive!r}")
    idx, _ = neighbours(vectors, k)
    return float((labels[idx[queries]] == positive).mean())


def pca_2d(vectors: np.ndarray) -> np.ndarray:
    """The rows projected on their first two principal components ``(N, 2)``; each axis's sign
    fixed so that its largest loading is positive (the same map for the same data)."""
    v = np.asarray(vectors, dtype=np.float64)
    if v.ndim != 2:
        raise ValueError(f"vectors must be (N, D), got shape {v.shape}")
    centred = v - v.mean(axis=0) if len(v) else v
    if len(v) < 2:
        return np.zeros((len(v), 2))
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    axes = vt[:2]
    axes = axes * np.sign(axes[np.arange(len(axes)), np.abs(axes).argmax(axis=1)])[:, None]
    out = np.zeros((len(v), 2))
    out[:, : len(axes)] = centred @ axes.T
    return out


@dataclass
class LinearHead:
    """A softmax regression on standardised embeddings: ``p = softmax(((x - mean) / scale) W + b)``."""

    mean: np.ndarray
    scale: np.ndarray
    weight: np.ndarray  # (D, K)
    bias: np.ndarray  # (K,)

    @classmethod
    def fit(cls, vectors: np.ndarray, labels: Sequence[int] | np.ndarray, n_classes: int | None = None,
            l2: float = 1.0, max_iter: int = 500) -> LinearHead:
        """Fit to integer ``labels`` (0..K-1) of ``vectors`` ``(N, D)``. ``l2`` is the penalty on the
        weights of the standardised features, per labelled example's mean loss times N (so it
        weighs less as labels accumulate): 1.0 suits 50-1,000 labels of a 128-d embedding."""
        x = np.asarray(vectors, dtype=np.float64)
        y = np.asarray(labels)
        if x.ndim != 2 or y.shape != (x.shape[0],):
            raise ValueError(f"need vectors (N, D) and labels (N,), got {x.shape} and {y.shape}")
        if not np.issubdtype(y.dtype, np.integer) or (y.size and y.min() < 0):
            raise ValueError("labels must be integers 0..K-1")
        k = int(n_classes if n_classes is not None else (y.max() + 1 if y.size else 0))
        if k < 2 or (y.size and y.max() >= k):
            raise ValueError(f"need at least 2 classes and labels below {k}")
        if len(np.unique(y)) < 2:
            raise ValueError("the labels must hold at least two different answers")
        mean = x.mean(axis=0)
        scale = x.std(axis=0)
        scale = np.where(scale > 1e-8, scale, 1.0)
        z = torch.from_numpy((x - mean) / scale)
        target = torch.from_numpy(y.astype(np.int64))
        w = torch.zeros(x.shape[1], k, dtype=torch.float64, requires_grad=True)
        b = torch.zeros(k, dtype=torch.float64, requires_grad=True)
        optimiser = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, tolerance_grad=1e-9,
                                      tolerance_change=1e-12, line_search_fn="strong_wolfe")

        def closure() -> torch.Tensor:
            optimiser.zero_grad()
            loss = torch.nn.functional.cross_entropy(z @ w + b, target) + l2 * (w * w).sum() / (2 * len(y))
            loss.backward()
            return loss

        optimiser.step(closure)
        return cls(mean=mean, scale=scale, weight=w.detach().numpy().copy(), bias=b.detach().numpy().copy())

    def predict_proba(self, vectors: np.ndarray) -> np.ndarray:
        """Answer probabilities ``(N, K)``."""
        z = (np.asarray(vectors, dtype=np.float64) - self.mean) / self.scale
        logits = z @ self.weight + self.bias
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        return p / p.sum(axis=1, keepdims=True)

    def to_dict(self) -> dict:
        """JSON-serialisable."""
        return {"mean": self.mean.tolist(), "scale": self.scale.tolist(), "weight": self.weight.tolist(), "bias": self.bias.tolist()}

    @classmethod
    def from_dict(cls, data: dict) -> LinearHead:
        return cls(**{key: np.asarray(data[key], dtype=np.float64) for key in ("mean", "scale", "weight", "bias")})
