"""Binary SWAP as published (Marshall et al. 2016; Beck et al. 2018, Galaxy Zoo Express).

Each volunteer has PL = P("yes"|yes) and PD = P("no"|no), learned from gold subjects with
pseudo-count priors: PL = (correct "yes" on yes-gold + initial·(2 + s)) / (yes-gold seen +
2 + s), clipped to [0.01, 0.99], the same for PD. A subject's probability p of being a
"yes" moves with each answer as ``core.swap_update`` says. This is exactly the consensus
estimator with two classes, gold-only learning and SWAP's prior, which ``swap_estimator``
builds; the functions here expose SWAP's own vocabulary on top of it.
"""

from __future__ import annotations

from collections.abc import Hashable

from .core import DEFAULT_CLIP, swap_skill, swap_update
from .estimator import ConsensusEstimator
from .retirement import PosteriorAbove, RetirementPolicy

__all__ = ["gzx_policy", "swap_estimator", "swap_skill", "swap_update", "volunteer_pl_pd"]


def gzx_policy(detection: float = 0.99, rejection: float = 0.004) -> RetirementPolicy:
    """GZX's retirement: "yes" when p > detection, "no" when p < rejection."""
    return RetirementPolicy([
        PosteriorAbove(detection, answer=1, reason="detected"),
        PosteriorAbove(1.0 - rejection, answer=0, reason="rejected"),
    ])


def swap_estimator(
    prior: float = 0.5,
    *,
    initial: float = 0.5,
    skepticism: float = 0.0,
    clip: tuple[float, float] = DEFAULT_CLIP,
    detection: float = 0.99,
    rejection: float = 0.004,
) -> ConsensusEstimator:
    """A two-class estimator that is SWAP: answers 1 = "yes", 0 = "no"; skills from gold."""
    return ConsensusEstimator(
        2,
        class_prior=[1.0 - prior, prior],
        initial_skill=initial,
        prior_strength=2.0,
        skepticism=skepticism,
        clip=clip,
        learn=("gold",),
        learn_skill_prior=False,
        learn_class_prior=False,  # SWAP as published: the prior stays what it is given
        half_trust=0.0,  # SWAP's prior (initial 0.5) already makes a newcomer's answers say nothing
        policy=gzx_policy(detection, rejection),
    )


def volunteer_pl_pd(estimator: ConsensusEstimator, worker: Hashable) -> tuple[float, float]:
    """SWAP's (PL, PD) of a volunteer: P("yes"|yes), P("no"|no)."""
    conf = estimator.confusion(worker)
    return float(conf[1, 1]), float(conf[0, 0])
