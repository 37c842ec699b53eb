"""Data augmentation in plain torch for galaxy images ``(N, 3, S, S)`` in [0, 1].

A galaxy's class does not depend on its orientation, so each training image gets a random
element of the dihedral group D4 (exact: quarter turns and mirroring permute pixels), plus a
small random rotation, shift and scale (one bilinear resampling through ``grid_sample``, never a
reflection) and a small brightness change. All randomness comes from the given
``torch.Generator``, so a seed reproduces a run.

A reflection does change the answer of a chirality question (clockwise or anticlockwise arms),
so ``augment_with_reflections`` also says which images it mirrored, and ``mirror_targets`` swaps
those images' target columns for the heads that declare ``mirror_swaps`` (``ml.model``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F

from ml.model import REFLECTING, dihedral


def random_dihedral_elements(
    x: torch.Tensor, generator: torch.Generator, reflect: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply an independent random D4 element to each image; returns the images and the elements
    ``(N,)`` (0..7, as ``ml.model.dihedral``; 4..7 mirror). With ``reflect`` (bool ``(N,)``) only
    the quarter turn is random and image ``i`` is mirrored exactly where ``reflect[i]``."""
    if reflect is None:
        ks = torch.randint(0, 8, (x.shape[0],), generator=generator)
    else:
        ks = torch.randint(0, 4, (x.shape[0],), generator=generator) + 4 * reflect.long()
    out = torch.empty_like(x)
    for k in range(8):
        idx = (ks == k).nonzero(as_tuple=True)[0]
        if idx.numel():
            out[idx] = dihedral(x[idx], k)
    return out, ks


def random_dihedral(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Apply an independent random D4 element to each image."""
    return random_dihedral_elements(x, generator)[0]


def mirror_targets(
    targets: Mapping[str, torch.Tensor], reflected: torch.Tensor, permutations: Mapping[str, Sequence[int]]
) -> dict[str, torch.Tensor]:
    """The targets ``{question_key: (N, K)}`` of images of which those where ``reflected`` (bool
    ``(N,)``) were mirrored: for each head in ``permutations`` (``ModelConfig.mirror_permutation``),
    a mirrored row's column ``j`` becomes its column ``perm[j]``. Soft labels and vote counts alike;
    rows that are missing (NaN or zero) stay missing. Other heads' tensors are returned as given."""
    out = dict(targets)
    if not bool(reflected.any()):
        return out
    for key, perm in permutations.items():
        if key not in out:
            continue
        t = out[key].clone()
        t[reflected] = t[reflected][:, list(perm)]
        out[key] = t
    return out


def random_affine(
    x: torch.Tensor,
    generator: torch.Generator,
    max_degrees: float = 45.0,
    max_shift: float = 0.05,
    max_log_scale: float = 0.1,
) -> torch.Tensor:
    """Random rotation (±max_degrees), shift (± max_shift of the side) and scale
    (exp(±max_log_scale)) per image, with reflected borders. Together with D4, ±45° covers
    every angle."""
    n = x.shape[0]
    u = torch.rand(n, 4, generator=generator) * 2 - 1
    theta = u[:, 0] * math.radians(max_degrees)
    scale = torch.exp(u[:, 1] * max_log_scale)
    cos, sin = torch.cos(theta) / scale, torch.sin(theta) / scale
    shift = u[:, 2:] * max_shift * 2  # grid coordinates span [-1, 1]
    mat = torch.stack(
        [torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1
    )
    grid = F.affine_grid(mat.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def random_brightness(
    x: torch.Tensor, generator: torch.Generator, max_log_gain: float = 0.1
) -> torch.Tensor:
    """Multiply each image by a random gain in exp(±max_log_gain)."""
    gain = torch.exp((torch.rand(x.shape[0], 1, 1, 1, generator=generator) * 2 - 1) * max_log_gain)
    return (x * gain.to(x.dtype)).clamp_(0.0, 1.0)


def augment_with_reflections(x: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The training augmentation (random D4, small affine jitter, brightness) and which images it
    mirrored (bool ``(N,)``). The affine jitter turns, shifts and scales but never mirrors."""
    x, ks = random_dihedral_elements(x, generator)
    reflected = ks >= REFLECTING.start
    return random_brightness(random_affine(x, generator), generator), reflected


def augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The training augmentation: random D4, small affine jitter, brightness."""
    return augment_with_reflections(x, generator)[0]


def contrastive_augment(
    x: torch.Tensor, generator: torch.Generator, reflect: torch.Tensor | None = None
) -> torch.Tensor:
    """The stronger view-making augmentation of self-supervised pretraining (``ml.pretrain``):
    random D4, any rotation, shifts of ±10% and scales of exp(±0.3), a gain per colour channel
    (±25%) and overall (±30%), and Gaussian noise of up to 2% of full scale. With ``reflect``
    (bool ``(N,)``), image ``i`` is mirrored exactly where ``reflect[i]`` (``random_dihedral_elements``).

    Why stronger than ``augment``: a contrastive task that the training augmentation's small
    changes leave easy teaches the network to match pixels, not galaxies (SimCLR, Chen et al.
    2020, found crops and colour changes essential); for survey images, changes of colour, size,
    position and noise stand for redshift, distance and depth (Hayat et al. 2021)."""
    n = x.shape[0]
    x = random_affine(random_dihedral_elements(x, generator, reflect)[0], generator, max_shift=0.1,
                      max_log_scale=0.3)
    channel_gain = torch.exp((torch.rand(n, 3, 1, 1, generator=generator) * 2 - 1) * 0.25)
    x = x * channel_gain.to(x.dtype)
    x = random_brightness(x, generator, max_log_gain=0.3)
    sigma = 0.02 * torch.rand(n, 1, 1, 1, generator=generator)
    return (x + torch.randn(x.shape, generator=generator) * sigma.to(x.dtype)).clamp_(0.0, 1.0)
