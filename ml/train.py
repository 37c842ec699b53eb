"""Datasets of galaxy images with per-question targets, and the seeded training loop.

A ``GalaxyDataset`` holds preprocessed uint8 images ``(N, S, S, 3)`` and, for each question, an
``(N, K)`` float target array: soft labels (e.g. the engine's posterior, rows summing to 1) or
vote counts. Rows that are NaN or all zero are unlabelled for that question and masked out.
Images are kept in memory as uint8 (6,664 GZ1 galaxies at 64×64 take 82 MB); batches are cut
straight from the tensor, which is faster than a DataLoader for this size.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from ml.augment import augment_with_reflections, mirror_targets
from ml.images import DEFAULT_CROP_FRACTION, load_images, to_tensor
from ml.losses import multi_head_loss
from ml.model import GalaxyCNN

TargetsLike = Mapping[str, np.ndarray] | np.ndarray | Sequence[int]


def as_targets(
    targets: TargetsLike, heads: Sequence[tuple[str, int]], n: int
) -> dict[str, np.ndarray]:
    """Normalise targets to ``{question_key: float (n, K)}``.

    Accepts a mapping from question key to either an ``(n, K)`` array (soft labels or counts)
    or an ``(n,)`` integer array of class labels (-1 = unlabelled, turned into one-hot rows).
    A bare array is allowed when the model has a single head. Questions absent from the mapping
    are unlabelled for every subject.
    """
    head_sizes = dict(heads)
    if not isinstance(targets, Mapping):
        if len(head_sizes) != 1:
            raise ValueError("targets must be a mapping {question_key: array} for several heads")
        targets = {next(iter(head_sizes)): np.asarray(targets)}
    out: dict[str, np.ndarray] = {}
    for key, value in targets.items():
        if key not in head_sizes:
            raise ValueError(f"unknown question {key!r}; heads are {list(head_sizes)}")
        k = head_sizes[key]
        arr = np.asarray(value)
        if arr.ndim == 1:
            if arr.dtype.kind not in "iu":
                raise ValueError(f"1-D targets for {key!r} must be integer class labels")
            if arr.size and (arr.min() < -1 or arr.max() >= k):
                raise ValueError(f"labels for {key!r} must be in -1..{k - 1}")
            onehot = np.zeros((arr.shape[0], k), dtype=np.float32)
            labelled = arr >= 0
            onehot[np.nonzero(labelled)[0], arr[labelled]] = 1.0
            arr = onehot
        arr = arr.astype(np.float32)
        if arr.shape != (n, k):
            raise ValueError(f"targets for {key!r} must have shape ({n}, {k}), got {arr.shape}")
        if np.any(np.nan_to_num(arr) < 0):
            raise ValueError(f"targets for {key!r} must be non-negative")
        out[key] = arr
    return out


class GalaxyDataset(Dataset):
    """Preprocessed images with targets for each question of a workflow."""

    def __init__(
        self,
        images: np.ndarray,
        targets: TargetsLike,
        heads: Sequence[tuple[str, int]],
    ) -> None:
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(
                f"images must be uint8 (N, S, S, 3), got {images.dtype} {images.shape}"
            )
        self.images = images
        self.targets = as_targets(targets, heads, images.shape[0])

    @classmethod
    def from_paths(
        cls,
        paths: Sequence[str | os.PathLike],
        targets: TargetsLike,
        heads: Sequence[tuple[str, int]],
        image_size: int = 64,
        crop_fraction: float = DEFAULT_CROP_FRACTION,
        cache_dir: str | os.PathLike | None = None,
    ) -> GalaxyDataset:
        """Load, centre-crop and resize image files (cached under ``cache_dir``)."""
        return cls(load_images(paths, image_size, crop_fraction, cache_dir), targets, heads)

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        x = to_tensor(self.images[i : i + 1])[0]
        return x, {k: torch.from_numpy(v[i]) for k, v in self.targets.items()}

    def tensors(self) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """All images as a uint8 tensor ``(N, 3, S, S)`` and all targets as float tensors."""
        x = torch.from_numpy(np.ascontiguousarray(self.images)).permute(0, 3, 1, 2)
        return x, {k: torch.from_numpy(v) for k, v in self.targets.items()}


def load_matching_state(model: torch.nn.Module, state: Mapping[str, torch.Tensor]) -> list[str]:
    """Load the entries of ``state`` whose names and shapes match the model (a warm start that
    survives an added or resized question head); returns the names left initialised."""
    own = model.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    model.load_state_dict(usable, strict=False)
    return sorted(set(own) - set(usable))


@torch.no_grad()
def recalibrate_batchnorm(
    model: torch.nn.Module, images: torch.Tensor, batch_size: int = 256, max_images: int = 2048
) -> None:
    """Re-estimate BatchNorm running statistics as exact averages over (up to ``max_images``
    of) the uint8 training images ``(N, 3, S, S)``, without augmentation.

    The running averages kept during training lag behind the weights: after a short run (a
    warm start on a few new labels, a tiny test set) they still remember the initial weights
    and make eval-mode predictions wrong. One forward pass fixes that at a third of an epoch's
    cost at most.
    """
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches below
    was_training = model.training
    model.train()
    step = max(1, images.shape[0] // max_images)
    subset = images[::step][:max_images]
    for start in range(0, subset.shape[0], batch_size):
        batch = subset[start : start + batch_size]
        if batch.shape[0] >= 2:
            model(batch.float().div_(255.0))
    for m, momentum in zip(norms, saved, strict=True):
        m.momentum = momentum
    model.train(was_training)


@torch.no_grad()
def evaluate_loss(model: GalaxyCNN, dataset: GalaxyDataset, batch_size: int = 256) -> float:
    """Mean loss over a dataset without augmentation, dropout off."""
    model.eval()
    x_all, t_all = dataset.tensors()
    total, n_batches = 0.0, 0
    for start in range(0, len(dataset), batch_size):
        sl = slice(start, start + batch_size)
        logits = model(x_all[sl].float().div_(255.0))
        total += float(multi_head_loss(logits, {k: v[sl] for k, v in t_all.items()},
                                       model.config.output))
        n_batches += 1
    return total / max(n_batches, 1)


def train(
    model: GalaxyCNN,
    dataset: GalaxyDataset,
    epochs: int,
    batch_size: int = 64,
    lr: float = 2e-3,
    weight_decay: float = 1e-4,
    seed: int = 0,
    augment: bool = True,
    warm_start_state: Mapping[str, torch.Tensor] | None = None,
    val_dataset: GalaxyDataset | None = None,
    val_every: int = 1,
    log: Callable[[dict], None] | None = None,
    min_steps: int = 0,
    on_step: Callable[[int], None] | None = None,
) -> dict:
    """Train ``model`` in place with AdamW and a warm-up + cosine learning-rate schedule.

    Deterministic for a given ``seed`` (shuffling, augmentation and dropout draw from seeded
    generators; the global RNG is restored afterwards). With ``augment``, an image the random D4
    element mirrors has the target columns of its heads' ``mirror_swaps`` swapped. ``warm_start_state`` (a state dict)
    is loaded first wherever names and shapes match. BatchNorm statistics are re-estimated
    at the end (and before each validation, every ``val_every`` epochs). Returns metrics:
    per-epoch train loss (and validation loss with ``val_dataset``), the total seconds and the
    examples seen.

    ``min_steps``: at least this many optimiser steps (more epochs where the data are few). Why:
    a fixed number of epochs gives a hundred subjects two steps an epoch, and a CNN that has taken
    thirty steps has learnt little beyond the class mix (``bench/cnn_training_steps.py``); the
    first versions of an online model train on just so few.

    ``log`` is called with each epoch's row of metrics, ``on_step`` with the number of steps taken
    after every optimiser step. Why per step too: a caller that must show it is alive (the
    platform's heartbeat of a training run) cannot wait for an epoch, whose length grows with the
    data and the image size (20,000 subjects at 64 px: 1.5 minutes on 2 quiet CPU cores, 13 with
    them contended).
    """
    if epochs < 0:
        raise ValueError(f"epochs must be >= 0, got {epochs}")
    if min_steps < 0:
        raise ValueError(f"min_steps must be >= 0, got {min_steps}")
    if warm_start_state is not None:
        load_matching_state(model, warm_start_state)
    n = len(dataset)
    history: list[dict] = []
    t0 = time.perf_counter()
    if n < 2 or epochs == 0:
        return {"epochs": history, "train_seconds": 0.0, "n_train": n}
    x_all, t_all = dataset.tensors()
    steps_per_epoch = math.ceil(n / batch_size)
    epochs = max(epochs, math.ceil(min_steps / steps_per_epoch))
    total_steps = epochs * steps_per_epoch
    warmup = max(1, min(steps_per_epoch, total_steps // 10))
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: (s + 1) / warmup
        if s < warmup
        else 0.5 * (1 + math.cos(math.pi * (s - warmup) / max(1, total_steps - warmup))),
    )
    gen = torch.Generator().manual_seed(seed)
    # A mirrored image's chirality answers are swapped (ml.augment.mirror_targets); rotations keep them.
    mirrored_heads = {key: model.config.mirror_permutation(key) for key, _ in model.config.mirror_swaps}
    step = 0
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # dropout masks
        for epoch in range(epochs):
            model.train()
            te = time.perf_counter()
            order = torch.randperm(n, generator=gen)
            running, seen = 0.0, 0
            for start in range(0, n, batch_size):
                idx = order[start : start + batch_size]
                if idx.numel() < 2:  # BatchNorm needs two examples; it is seen next epoch
                    continue
                x = x_all[idx].float().div_(255.0)
                targets = {k: v[idx] for k, v in t_all.items()}
                if augment:
                    x, reflected = augment_with_reflections(x, gen)
                    targets = mirror_targets(targets, reflected, mirrored_heads)
                loss = multi_head_loss(model(x), targets, model.config.output)
                optimizer.zero_grad(set_to_none=True)
                if loss.requires_grad:
                    loss.backward()
                    optimizer.step()
                scheduler.step()
                running += float(loss.detach()) * idx.numel()
                seen += idx.numel()
                step += 1
                if on_step is not None:
                    on_step(step)
            row = {"epoch": epoch + 1, "train_loss": running / max(seen, 1),
                   "seconds": time.perf_counter() - te}
            if val_dataset is not None and len(val_dataset) and (
                epoch == epochs - 1 or (epoch + 1) % val_every == 0
            ):
                recalibrate_batchnorm(model, x_all)
                row["val_loss"] = evaluate_loss(model, val_dataset)
            history.append(row)
            if log is not None:
                log(row)
        recalibrate_batchnorm(model, x_all)
    model.eval()
    return {"epochs": history, "train_seconds": time.perf_counter() - t0, "n_train": n}
