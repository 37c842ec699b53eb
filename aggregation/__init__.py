"""Chorus aggregation engine: online Bayesian consensus of volunteer answers and boxes.

A pure library (numpy/scipy, no Django). The platform calls it; it never calls the platform.
"""

from .core import (
    confusion_from_counts,
    dirichlet_prior,
    expected_risk,
    information_bits,
    log_confusion,
    swap_skill,
    swap_update,
    update_log_posterior,
)
from .difficulty import DifficultyEstimator
from .estimator import ConsensusEstimator, Decision, replay_log
from .retirement import (
    FirstKAgree,
    MaxClassifications,
    MinClassifications,
    PosteriorAbove,
    RetirementPolicy,
    RiskBelow,
    SubjectSummary,
    parse_policy,
    policy_from_dict,
)
from .swap import gzx_policy, swap_estimator
from .workflow import SettingsError, TaskRisk, WorkflowAggregator, WorkflowDecision, WorkflowRetirement

__all__ = [
    "ConsensusEstimator",
    "Decision",
    "DifficultyEstimator",
    "FirstKAgree",
    "MaxClassifications",
    "MinClassifications",
    "PosteriorAbove",
    "RetirementPolicy",
    "RiskBelow",
    "SettingsError",
    "SubjectSummary",
    "TaskRisk",
    "WorkflowAggregator",
    "WorkflowDecision",
    "WorkflowRetirement",
    "confusion_from_counts",
    "dirichlet_prior",
    "expected_risk",
    "gzx_policy",
    "information_bits",
    "log_confusion",
    "parse_policy",
    "policy_from_dict",
    "replay_log",
    "swap_estimator",
    "swap_skill",
    "swap_update",
    "update_log_posterior",
]
