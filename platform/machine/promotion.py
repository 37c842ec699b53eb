"""Which model version serves: the promotion rule, promotion, and roll-back.

A new version is promoted only if it is better than the one serving, both measured now on the same
held-out subjects (``machine.evaluation``): a log loss on the gold set plus the validation subjects
(their label: the crowd's) no worse than the serving version's by more than ``promotion_tolerance``
standard errors of the paired difference (see ``is_better`` for why a tolerance). Gold alone is too
small a set to tell versions apart (its accuracy's standard error is about 4 points at 100
subjects: a lucky early version would block every successor), and accuracy is the wrong yardstick:
it ignores how sure the CNN is, which is what machine retirement acts on; log loss, a proper scoring
rule, uses every subject's probability. A trained candidate also beats an untrained serving version
and an untrained one never replaces a trained one, whatever their log losses: only a trained
version may retire, so an untrained one promoted on its log loss would stop the machine's
retirements, and its trained successors could be rejected against it. The first
version is promoted (nothing to compare with; it retires nothing before it is trained). Promotion
predicts every unretired subject and ranks them for humans (``machine.prediction``).

The runs that showed each of these: docs/machine.md, step 6.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from django.db import transaction
from django.utils import timezone

from machine import prediction
from machine.models import ModelVersion
from machine.selectors import current_model
from projects.models import Workflow
from projects.services import log_admin_action

State = ModelVersion.State


def log_loss_difference(candidate_losses: np.ndarray, serving_losses: np.ndarray) -> dict[str, float]:
    """The mean of the paired per-subject log-loss differences (candidate minus serving; below 0:
    the candidate is better) and its standard error."""
    d = np.asarray(candidate_losses, dtype=float) - np.asarray(serving_losses, dtype=float)
    se = float(d.std(ddof=1) / np.sqrt(d.size)) if d.size > 1 else float("inf")
    return {"mean": float(d.mean()) if d.size else 0.0, "standard_error": se, "n": int(d.size)}


def is_better(candidate: dict, serving: dict | None, tolerance: float = 0.0) -> bool:
    """The promotion rule: a "trained" version beats an untrained one (only a trained one may retire
    subjects); between two of the same standing, a log loss on gold and validation subjects together
    no worse than the serving version's by more than ``tolerance`` standard errors of their paired
    difference (``log_loss_difference``; 0: strictly lower); where that is missing, a lower log loss;
    where either version lacks one (metrics from before it was measured), higher accuracy on them (on
    gold alone if either lacks that), or the same and a lower calibration error on gold.

    Why a tolerance: the candidate was trained on everything the serving version saw and more, so
    it is the better bet unless the held-out subjects show otherwise; and only a promotion lets the
    machine retire what it has newly learnt. With a strict comparison, trained versions were
    rejected by differences within the noise of the held-out subjects, and the machine stopped
    retiring (docs/machine.md, step 6)."""
    if serving is None:
        return True
    if "trained" in candidate and "trained" in serving and bool(candidate["trained"]) != bool(serving["trained"]):
        return bool(candidate["trained"])
    difference = candidate.get("log_loss_difference")
    if difference is not None:
        return difference["mean"] < tolerance * difference["standard_error"] - 1e-12
    a, b = candidate.get("comparison_log_loss"), serving.get("comparison_log_loss")
    if a is not None and b is not None:
        return a < b - 1e-12
    key = "comparison_accuracy" if "comparison_accuracy" in candidate and "comparison_accuracy" in serving else "accuracy"
    a, b = candidate.get(key), serving.get(key)
    if a is None or b is None:
        return False  # without gold subjects nothing can be shown better: an admin may promote by hand
    if a > b + 1e-12:
        return True
    return abs(a - b) <= 1e-12 and (candidate.get("ece") or 0.0) < (serving.get("ece") or 0.0)


def promote_model_version(version: ModelVersion, user: Any = None, *, predict: str = "queue") -> None:
    """Make ``version`` the one serving (logged); its predictions then enter the engine and rank the
    queue: ``predict="queue"`` on the ml worker, ``"now"`` in this process, ``"no"`` not at all."""
    if version.state in (State.TRAINING, State.FAILED) or not version.model:
        raise ValueError(f"model v{version.version} is {version.state}: only a trained version can be promoted")
    with transaction.atomic():
        version.state = State.PROMOTED
        version.promoted_at = timezone.now()
        version.promoted_by = user if getattr(user, "is_authenticated", False) else None
        version.save(update_fields=["state", "promoted_at", "promoted_by"])
        metrics = {k: version.metrics.get(k) for k in ("accuracy", "ece", "n_train", "n_gold_test", "trained")}
        log_admin_action(version.workflow, user, "promote", {"version": version.version, "metrics": metrics})
    _after_promotion(version, predict)


def _after_promotion(version: ModelVersion, predict: str) -> None:
    if predict == "now":
        prediction.predict_unretired(version.pk)
    elif predict == "queue":
        from machine.tasks import predict_unretired as task

        transaction.on_commit(lambda: task.delay(version.pk))


def roll_back(workflow: Workflow, user: Any = None, *, predict: str = "queue") -> ModelVersion | None:
    """Withdraw the version serving and serve again the one promoted before it (logged). None when
    there is nothing to roll back to. Subjects it already retired stay retired (the log is append-only)."""
    with transaction.atomic():
        Workflow.objects.select_for_update().filter(pk=workflow.pk).first()
        current = current_model(workflow)
        if current is None:
            return None
        previous = (
            ModelVersion.objects.filter(workflow=workflow, state=State.PROMOTED, promoted_at__lte=current.promoted_at)
            .exclude(pk=current.pk)
            .order_by("-promoted_at", "-version")
            .first()
        )
        if previous is None:
            return None
        current.state = State.ROLLED_BACK
        current.save(update_fields=["state"])
        previous.promoted_at = timezone.now()
        previous.promoted_by = user if getattr(user, "is_authenticated", False) else None
        previous.save(update_fields=["promoted_at", "promoted_by"])
        log_admin_action(workflow, user, "roll_back", {"from_version": current.version, "to_version": previous.version})
    _after_promotion(previous, predict)
    return previous
