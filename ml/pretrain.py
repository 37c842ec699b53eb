"""Self-supervised pretraining of the CNN's trunk on unlabelled images (SimCLR, Chen et al. 2020).

Why: the machine in the loop first trains on the few hundred subjects that humans have retired,
and a CNN learnt from scratch on so few is right less often, and sure of less, than it will be
(``bench/cnn_training_steps.py``). A project has all its subjects' images before its first vote,
so the trunk can first learn what makes two galaxies different from what makes two views of one
galaxy alike: two strongly augmented views of each image (``ml.augment.contrastive_augment``) are
pulled together and pushed away from the other images of the batch (the NT-Xent loss), through a
small projection head that is thrown away afterwards. Labels are never used. On GZ1 at 48 px
(``bench/cnn_pretraining.py``) a trunk pretrained so for 20 epochs (about ten minutes on 2 CPU cores)
and then fine-tuned on 200–1,000 labelled galaxies was 1.5–2 points more accurate than one learnt
from scratch, and sure of more of them.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ml.augment import contrastive_augment
from ml.model import GalaxyCNN
from ml.train import recalibrate_batchnorm


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """The normalised-temperature cross-entropy of SimCLR: each view's positive is the other view
    of its image, its negatives the 2(N - 1) views of the batch's other images."""
    n = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    similarity = z @ z.T / temperature
    similarity.fill_diagonal_(float("-inf"))
    positives = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)])
    return F.cross_entropy(similarity, positives)


def pretrain_contrastive(
    model: GalaxyCNN,
    images: np.ndarray,
    epochs: int,
    batch_size: int = 256,
    lr: float = 2e-3,
    weight_decay: float = 1e-4,
    temperature: float = 0.2,
    projection_dim: int = 64,
    seed: int = 0,
    on_step: Callable[[int], None] | None = None,
    log: Callable[[dict], None] | None = None,
) -> dict:
    """Train ``model``'s trunk and embedding in place on uint8 images ``(N, S, S, 3)``; the heads
    are left as they are. Deterministic for a seed (the global RNG is restored afterwards).
    AdamW at a constant ``lr`` after a one-epoch warm-up; BatchNorm statistics re-estimated on the
    unaugmented images at the end. When a head declares ``mirror_swaps``, the two views of an
    image are mirrored alike (both or neither, at random) and differ by rotation only. Why: views
    that differ by a reflection teach the embedding to ignore it, and a trunk blind to mirroring
    cannot tell a clockwise spiral from an anticlockwise one. Returns ``{"epochs": [{"epoch", "loss", "seconds"}...],
    "train_seconds", "n_images"}``; ``loss`` starts near log(2 * batch - 1) (chance)."""
    if epochs < 0:
        raise ValueError(f"epochs must be >= 0, got {epochs}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be uint8 (N, S, S, 3), got {images.dtype} {images.shape}")
    n = images.shape[0]
    t0 = time.perf_counter()
    history: list[dict] = []
    if n < 2 or epochs == 0:
        return {"epochs": history, "train_seconds": 0.0, "n_images": n}
    x_all = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)
    batch = min(batch_size, n)
    steps_per_epoch = n // batch  # full batches only: a small last batch makes the task easier
    gen = torch.Generator().manual_seed(seed)
    keep_chirality = bool(model.config.mirror_swaps)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        projection = nn.Sequential(nn.Linear(model.config.embedding_dim, model.config.embedding_dim),
                                   nn.ReLU(inplace=True), nn.Linear(model.config.embedding_dim, projection_dim))
        params = [*model.trunk.parameters(), *model.embedding.parameters(), *projection.parameters()]
        optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / steps_per_epoch))  # one-epoch warm-up
        model.train()
        step = 0
        for epoch in range(epochs):
            te = time.perf_counter()
            order = torch.randperm(n, generator=gen)
            running = 0.0
            for start in range(0, steps_per_epoch * batch, batch):
                x = x_all[order[start : start + batch]].float().div_(255.0)
                reflect = torch.rand(batch, generator=gen) < 0.5 if keep_chirality else None
                views = torch.cat([contrastive_augment(x, gen, reflect), contrastive_augment(x, gen, reflect)])
                z = projection(model.embed(views))
                loss = nt_xent(z[:batch], z[batch:], temperature)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                running += float(loss.detach())
                step += 1
                if on_step is not None:
                    on_step(step)
            row = {"epoch": epoch + 1, "loss": running / steps_per_epoch, "seconds": time.perf_counter() - te}
            history.append(row)
            if log is not None:
                log(row)
        recalibrate_batchnorm(model, x_all)
    model.eval()
    return {"epochs": history, "train_seconds": time.perf_counter() - t0, "n_images": n,
            "chance_loss": math.log(2 * batch - 1)}
