"""``Workflow.active_learning``: the machine's settings for one workflow, their defaults in one place.

| key | default | meaning |
| --- | --- | --- |
| ``enabled`` | on once any key is set | the machine trains, predicts and ranks for this workflow (``{}``: off) |
| ``acquisition`` | ``"bald"`` | how humans' queue is ranked: ``bald`` (MC dropout mutual information, Walmsley et al. 2020), ``entropy`` (of the CNN's prediction), ``disagreement`` (Jensen–Shannon between CNN and crowd posterior) or ``random`` |
| ``exploration_share`` | ``0.1`` | share of unretired subjects given a random priority instead (exploration) |
| ``machine_retirement`` | ``True`` | the machine may retire subjects (reason ``"machine"``) once trained |
| ``machine_threshold`` | ``0.99`` | ... and only where its top probability is at least this (for each question it answers) |
| ``retirement_versions`` | ``2`` | ... and only where the mean of this version's probabilities and its ancestors' (the versions promoted before it, ``retirement_versions`` in all) reaches the threshold, on the same answer (``1``: this version alone) |
| ``retrain_every`` | ``50`` | retrain after this many new human retirements |
| ``min_gold_accuracy`` | ``0.9`` | "trained": accuracy on the held-out gold set at least this ... |
| ``min_gold_subjects`` | ``20`` | ... measured on at least this many gold subjects ... |
| ``stable_versions`` | ``2`` | ... for this many consecutive versions (this one and its ancestors) ... |
| ``stability_tolerance`` | ``0.03`` | ... none of whose gold accuracies is more than this below an older one's (GZX's "stable" machine; a rise is allowed) ... |
| ``min_retire_accuracy`` | ``0.98`` | ... and at least this accurate on the gold subjects its line of versions would have retired so far, by the rule it retires by (``machine_threshold``, ``retirement_versions``) replayed on gold (``machine.gold_gate.replay_on_gold``), at least ``min_gold_subjects`` of them |
| ``retire_stop_confidence`` | ``0.9`` | once a version is trained, its successors stay trained (the machine keeps retiring) until the line's record on the gold subjects it would have retired shows with this probability (Beta posterior, uniform prior) that it is below ``min_retire_accuracy``: a record of a few hundred gold subjects moves by a point with one or two of them, and the point estimate against the bar stopped a machine for good on such noise (0.5: it stops once the record is more likely below the bar than above, about the point estimate; higher: a trained line is trusted longer, and may retire less accurately meanwhile) |
| ``retire_record`` | ``"overall"`` | what ``min_retire_accuracy`` and ``retire_stop_confidence`` judge: ``overall``, the record of all the line's retirements together; ``per_answer``, the record of each answer on its own, and the machine retires only with the answers whose record passes (``machine.gold_gate.certified_answers``). Why it exists: one overall record is mostly the common answer's, and can hide a rarer answer retired far less accurately. Why it is not the default: in the one full GZ1 run with it the loop was less accurate than with the overall record (both measured in docs/machine.md, step 7) |
| ``questions`` | ``{}`` | per question, overrides of ``machine_threshold``, ``min_gold_accuracy``, ``min_retire_accuracy`` and ``label_min_reach``: ``{"T1": {"machine_threshold": 0.95}}``; a question not named, or a setting not named for it, takes the workflow-wide value (``question_settings``). Every question is gated, calibrated and thresholded on its own (docs/machine.md, "The whole tree") |
| ``label_min_reach`` | ``0.5`` | a human-retired subject teaches a question only where the engine's reach of that question (the product of the answer posteriors along its path, ``aggregation.workflow``) is at least this: a galaxy that is surely smooth says nothing about its spiral arms (the first question is always reached) |
| ``calibration_folds`` | ``2`` | gold subjects (split by a stable hash of their id) are cut into this many folds: each version's probabilities are calibrated (``ml.calibration``) on the experts' answers to all of them, and measured on each fold with a calibration fitted on the other folds (cross-fitting: every gold subject measures, none with a calibration it helped fit). ``0``: no calibration |
| ``promotion_tolerance`` | ``2.0`` | a new version of the same standing (both trained or both not) is promoted unless its log loss on gold and validation subjects is worse than the serving one's by more than this many standard errors of the paired difference (``0``: only a strictly lower log loss) |
| ``min_train`` | ``20`` | no training below this many human-retired subjects (after the validation share) |
| ``validation_share`` | ``0.2`` | share of human-retired subjects (a stable hash of their id) never trained on: with the gold set, what a new version must do better on to be promoted |
| ``max_train`` | ``20000`` | at most this many (a random sample of the) retired subjects per training run |
| ``pretrain_epochs`` | ``20`` | before its first version, the CNN's trunk is pretrained this many epochs on the workflow's unlabelled images (self-supervised, ``ml.pretrain``; gold subjects left out, at most ``max_train`` of them), once, and the first version is fine-tuned from it (``0``: start from random weights). A project has its images before its first vote, and its first versions learn from a few hundred retired subjects (measured: ``bench/cnn_pretraining.py``, docs/machine.md, step 0) |
| ``epochs`` / ``warm_epochs`` | ``8`` / ``3`` | epochs from scratch (first version) / warm-started from the current one |
| ``min_steps`` | ``200`` | ... but at least this many optimiser steps (batches) per training run: more epochs while the retired subjects are few (a hundred subjects give two steps an epoch; ``bench/cnn_training_steps.py``) |
| ``image_size`` | ``64`` | pixels per side the CNN sees |
| ``batch_size`` | ``64`` | training batch size |
| ``tta`` | ``False`` | average predictions over the 8 rotations/flips (8× the inference time) |
| ``mc_samples`` | ``20`` | Monte Carlo dropout samples for BALD |
| ``inference_batch`` | ``256`` | subjects per inference batch at promotion |
| ``seed`` | ``0`` | training seed (version *n* trains with ``seed + n``) |
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from projects.models import Workflow

ACQUISITIONS = ("bald", "entropy", "disagreement", "random")
RETIRE_RECORDS = ("per_answer", "overall")

DEFAULTS: dict[str, Any] = {
    "enabled": False,
    "acquisition": "bald",
    "exploration_share": 0.1,
    "machine_retirement": True,
    "machine_threshold": 0.99,
    "retirement_versions": 2,
    "retrain_every": 50,
    "min_gold_accuracy": 0.9,
    "min_gold_subjects": 20,
    "stable_versions": 2,
    "stability_tolerance": 0.03,
    "min_retire_accuracy": 0.98,
    "retire_stop_confidence": 0.9,
    "retire_record": "overall",
    "calibration_folds": 2,
    "promotion_tolerance": 2.0,
    "min_train": 20,
    "validation_share": 0.2,
    "max_train": 20000,
    "pretrain_epochs": 20,
    "epochs": 8,
    "warm_epochs": 3,
    "min_steps": 200,
    "image_size": 64,
    "batch_size": 64,
    "tta": False,
    "mc_samples": 20,
    "inference_batch": 256,
    "seed": 0,
    "questions": {},
    "label_min_reach": 0.5,
}

# The settings a workflow may set per question (``questions``), each on its own scale.
QUESTION_SETTINGS = ("machine_threshold", "min_gold_accuracy", "min_retire_accuracy", "label_min_reach")

_FRACTIONS = ("exploration_share", "machine_threshold", "min_gold_accuracy", "stability_tolerance", "validation_share",
              "min_retire_accuracy", "retire_stop_confidence", "label_min_reach")
_POSITIVE_INTS = ("retirement_versions", "retrain_every", "min_gold_subjects", "stable_versions", "min_train", "max_train", "image_size",
                  "batch_size", "mc_samples", "inference_batch")
_NON_NEGATIVE_INTS = ("pretrain_epochs", "epochs", "warm_epochs", "min_steps", "calibration_folds", "seed")
_NON_NEGATIVE_NUMBERS = ("promotion_tolerance",)


def validate_active_learning(config: Any) -> list[str]:
    """Problems with a workflow's ``active_learning`` settings (empty when valid)."""
    if not isinstance(config, dict):
        return ["active_learning must be an object"]
    errors = [f"unknown key {key!r}" for key in sorted(set(config) - set(DEFAULTS))]
    if "acquisition" in config and config["acquisition"] not in ACQUISITIONS:
        errors.append(f"acquisition must be one of {', '.join(ACQUISITIONS)}")
    if "retire_record" in config and config["retire_record"] not in RETIRE_RECORDS:
        errors.append(f"retire_record must be one of {', '.join(RETIRE_RECORDS)}")
    for key in ("enabled", "machine_retirement", "tta"):
        if key in config and not isinstance(config[key], bool):
            errors.append(f"{key} must be true or false")
    for key in _FRACTIONS:
        value = config.get(key, DEFAULTS[key])
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
            errors.append(f"{key} must be a number between 0 and 1")
    for key in _NON_NEGATIVE_NUMBERS:
        value = config.get(key, DEFAULTS[key])
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < float("inf"):
            errors.append(f"{key} must be a number >= 0")
    for key in _POSITIVE_INTS + _NON_NEGATIVE_INTS:
        value = config.get(key, DEFAULTS[key])
        low = 1 if key in _POSITIVE_INTS else 0
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            errors.append(f"{key} must be an integer >= {low}")
    if config.get("calibration_folds") == 1:
        errors.append("calibration_folds must be 0 (no calibration) or at least 2")
    errors.extend(_question_errors(config.get("questions", {})))
    return errors


def _is_fraction(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and 0.0 <= value <= 1.0


def _question_errors(questions: Any) -> list[str]:
    if not isinstance(questions, dict):
        return ["questions must be an object {question key: {setting: value}}"]
    errors = []
    for key, overrides in questions.items():
        if not isinstance(overrides, dict):
            errors.append(f"questions.{key} must be an object {{setting: value}}")
            continue
        errors.extend(f"questions.{key}: unknown setting {name!r} (one of {', '.join(QUESTION_SETTINGS)})"
                      for name in sorted(set(overrides) - set(QUESTION_SETTINGS)))
        errors.extend(f"questions.{key}.{name} must be a number between 0 and 1"
                      for name in QUESTION_SETTINGS if name in overrides and not _is_fraction(overrides[name]))
    return errors


def question_settings(cfg: dict[str, Any], key: str) -> dict[str, Any]:
    """``cfg`` (``settings_of``'s) with question ``key``'s own ``questions`` overrides in force."""
    overrides = (cfg.get("questions") or {}).get(key) or {}
    return cfg | {name: overrides[name] for name in QUESTION_SETTINGS if name in overrides}


def settings_of(active_learning: dict | None) -> dict[str, Any]:
    """The defaults overlaid with a workflow's own settings (raises ``ValueError`` if invalid).

    A workflow with no settings (``{}``) has no machine; setting any key (as the admin page does)
    turns it on unless ``"enabled": false``."""
    config = dict(active_learning or {})
    errors = validate_active_learning(config)
    if errors:
        raise ValueError("; ".join(errors))
    return DEFAULTS | {"enabled": bool(config)} | config


def machine_settings(workflow: Workflow) -> dict[str, Any]:
    """The workflow's machine settings: ``settings_of`` its ``active_learning``."""
    return settings_of(workflow.active_learning)
