"""Synthetic galaxy-like images for the ML tests (no files, fully seeded)."""

from __future__ import annotations

import numpy as np


def blobs(n: int, size: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A separable synthetic set: class 0 is a round red blob, class 1 a blue elongated bar,
    each at a random orientation and small offset on dark noisy sky. uint8 (n, S, S, 3)."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    yy, xx = np.mgrid[:size, :size].astype(np.float64) - (size - 1) / 2
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    for i in range(n):
        dx, dy = rng.uniform(-2, 2, 2)
        angle = rng.uniform(0, np.pi)
        u = (xx - dx) * np.cos(angle) + (yy - dy) * np.sin(angle)
        v = -(xx - dx) * np.sin(angle) + (yy - dy) * np.cos(angle)
        if y[i] == 0:
            profile, colour = np.exp(-(u**2 + v**2) / (2 * 4.0**2)), (220, 120, 60)
        else:
            profile, colour = np.exp(-(u**2) / (2 * 7.0**2) - v**2 / (2 * 1.5**2)), (60, 120, 230)
        img = profile[..., None] * np.array(colour) + rng.normal(15, 5, (size, size, 3))
        images[i] = np.clip(img, 0, 255).astype(np.uint8)
    return images, y


def spirals(n: int, size: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A chiral synthetic set, like GZ1's second question: class 0 an edge-on disk (a thin bar),
    1 a two-armed spiral winding one way, 2 one winding the other way (the mirror image of a class
    1 spiral is a class 2 one), each at a random orientation on dark noisy sky. uint8 (n, S, S, 3)."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    yy, xx = np.mgrid[:size, :size].astype(np.float64) - (size - 1) / 2
    r, theta = np.hypot(xx, yy), np.arctan2(yy, xx)
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    for i in range(n):
        phase = rng.uniform(0, 2 * np.pi)
        if y[i] == 0:
            u = xx * np.cos(phase) + yy * np.sin(phase)
            v = -xx * np.sin(phase) + yy * np.cos(phase)
            profile = np.exp(-(u**2) / (2 * 8.0**2) - v**2 / (2 * 1.2**2))
        else:
            winding = 1.0 if y[i] == 1 else -1.0
            # two arms at angle phase + winding * r / 3 (and half a turn on): a logarithmic-ish spiral
            arm = np.cos(2 * (theta - phase - winding * r / 3.0))
            profile = np.exp(-r / 6.0) * (0.35 + 0.65 * np.clip(arm, 0, 1) ** 4) * (r < size / 2 - 1)
        img = profile[..., None] * np.array((200, 190, 170)) + rng.normal(15, 5, (size, size, 3))
        images[i] = np.clip(img, 0, 255).astype(np.uint8)
    return images, y
