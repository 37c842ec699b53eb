"""Calibrating a head's probabilities against expert (gold) answers: a scale and per-answer biases.

Why: the CNN learns from the crowd's consensus, and the crowd's mistakes are not spread evenly. In
the GZ1 simulation the engine labelled 13% of smooth galaxies featured (at posterior 0.99) and 1%
of featured ones smooth; a CNN that fits those labels well can never be more than ~87% sure that a
galaxy is smooth, however smooth it looks, so a machine threshold of 0.9 keeps it from retiring
any smooth galaxy, and its "0.9" means something else than 90% right. Refitting the logits on gold
subjects (the experts' answers), ``logits * scale + bias`` (vector scaling without the off-diagonal
terms, Guo et al. 2017), undoes such a skew and an over- or under-confidence: in an offline check on held-out gold, the
share of galaxies the CNN was >= 95% sure of went from 9% (96% right) to about half (98-100%
right), see ``bench/results/machine_loop_6493.md``. Two or ``K + 1`` numbers per head are safe to fit on a
hundred gold subjects; a weak Gaussian prior (at the identity) keeps them finite when gold is tiny
or one-sided.
"""

from __future__ import annotations

import numpy as np
import torch

from ml.model import align_views

PRIOR_STRENGTH = 1.0  # as if one extra subject pulled towards scale 1, bias 0


def fit_vector_scaling(
    logits: torch.Tensor, labels: np.ndarray, max_iter: int = 200, *, view_columns: torch.Tensor | None = None
) -> tuple[float, list[float]]:
    """The ``(scale, bias)`` minimising the log loss of ``mean_t softmax(logits[t] * scale + bias)``.

    ``logits`` is ``(T, N, K)``: T views of each subject (1, or 8 with test-time averaging), averaged
    after the softmax as ``predict_proba`` does; ``labels`` the true answers ``(N,)``. ``view_columns``
    (``ml.model.view_columns``) puts a mirrored view's answers in the subject's order after the
    softmax, as ``predict_proba`` does for a head with ``mirror_swaps``: the calibration is of the
    head's answer about the image it sees.
    """
    logits = logits.detach().to(torch.float64)
    y = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    if logits.ndim != 3 or logits.shape[1] != y.shape[0]:
        raise ValueError(f"logits must be (T, N, K) with N = {y.shape[0]}, got {tuple(logits.shape)}")
    if y.numel() == 0:
        raise ValueError("no labelled subjects to calibrate on")
    k = logits.shape[-1]
    if int(y.min()) < 0 or int(y.max()) >= k:
        raise ValueError(f"labels must be in 0..{k - 1}")
    log_scale = torch.zeros((), dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(k, dtype=torch.float64, requires_grad=True)
    optimiser = torch.optim.LBFGS([log_scale, bias], lr=0.5, max_iter=max_iter, line_search_fn="strong_wolfe")
    n = float(y.numel())

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        probs = align_views(torch.softmax(logits * log_scale.exp() + bias, dim=-1), view_columns).mean(0)
        nll = -torch.log(probs[torch.arange(y.numel()), y].clamp_min(1e-12)).mean()
        loss = nll + PRIOR_STRENGTH * 0.5 * (log_scale**2 + (bias**2).sum()) / n
        loss.backward()
        return loss

    optimiser.step(closure)
    b = bias.detach() - bias.detach().mean()  # softmax ignores a common shift: keep them centred
    return float(log_scale.detach().exp()), [float(v) for v in b]


def apply_vector_scaling(logits: torch.Tensor, scale: float, bias: list[float]) -> torch.Tensor:
    """``logits * scale + bias`` (bias over the last axis)."""
    return logits * scale + torch.as_tensor(bias, dtype=logits.dtype)
