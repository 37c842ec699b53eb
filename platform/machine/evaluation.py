"""How a model version is measured: calibrated on the gold subjects, out of fold, then its metrics on
the gold set and the validation subjects.

- Calibration: the CNN learns from the crowd's consensus, whose mistakes can be skewed (one answer
  called another far more often than the reverse): fitted to it, the CNN could never be sure of the
  answer the crowd under-calls. After training, each version's logits are refitted (a scale and a
  bias per answer, ``ml.calibration``) to the experts' answers on every gold subject, and measured
  out of fold: the gold subjects are cut into ``calibration_folds`` folds by a hash of their id, and
  each fold is measured with a calibration fitted on the others (``calibrate_on_gold``). Every gold
  subject measures, none with a calibration it helped fit; each version keeps its out-of-fold gold
  predictions (``ModelVersion.gold_predictions``) so that its successors' retirement rule can be
  replayed on them (``machine.gold_gate``).
- Metrics (``evaluate``): on gold, what the "trained" criterion (``machine.gold_gate``) reads; on
  gold and validation subjects together, the per-subject log losses the promotion rule compares
  (``machine.promotion``).
- Per question: each question the machine answers is calibrated (its head's own scale and bias) and
  measured on the gold subjects whose experts answered it, and on the validation subjects labelled
  on it (``machine.training_data``): a CNN can be sure of smooth galaxies and a coin flip on the
  winding of spiral arms, and each question must show what it is worth on its own.

What these choices measured: docs/machine.md, steps 4 and 5.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from machine import agents, gold_gate, training_data
from projects.models import Workflow

COMPARISON_LOSSES = "comparison_losses"


def gold_fold(subject_id: int, folds: int) -> int:
    """A gold subject's calibration fold: a stable pseudo-random one of ``folds``, by id (with two
    folds, fold 0 is ``is_held_out(subject_id, 0.5)``)."""
    return ((subject_id * 2654435761) % 2**32) * folds >> 32


def calibrate_on_gold(classifier: Any, gold: training_data.Labelled, cfg: dict, key: str | None = None) -> np.ndarray:
    """Calibrate head ``key`` of ``classifier`` (default: its first) on the experts' answers to every
    gold subject of that question and return their out-of-fold probabilities
    (``GalaxyClassifier.cross_calibrate``, ``calibration_folds`` folds): what measures it. With
    ``calibration_folds`` 0, or where a fold's complement has fewer than ``min_gold_subjects`` gold
    subjects (small projects, a question few gold subjects reach), no calibration of that head: the
    plain predictions, all of them measuring."""
    ids, y = gold
    key = classifier.heads[0][0] if key is None else key
    if not ids:
        return np.empty((0, dict(classifier.heads)[key]))
    images = training_data.load_images(ids, classifier.config.image_size)
    k = cfg["calibration_folds"]
    if k >= 2 and ids:
        folds = np.array([gold_fold(i, k) for i in ids])
        if len(set(folds.tolist())) >= 2 and min(int((folds != f).sum()) for f in range(k)) >= cfg["min_gold_subjects"]:
            return classifier.cross_calibrate(images, {key: y}, folds, tta=cfg["tta"])[key]
    return classifier.predict_proba(images, tta=cfg["tta"])[key]


def evaluate(
    classifier: Any, workflow: Workflow, cfg: dict, gold: training_data.Labelled | None = None,
    validation: training_data.Labelled | None = None, *, gold_probs: np.ndarray | None = None,
    line: Sequence[tuple[Mapping[str, Sequence[float]], bool]] = (), on_batch: Callable[[], None] | None = None,
    key: str | None = None, validation_probs: np.ndarray | None = None,
) -> dict:
    """Gold-set metrics: accuracy, balanced accuracy, ECE, confusion (rows true, columns predicted),
    how many gold subjects this version alone is sure of (top probability >= threshold) and how
    many of those it got right (``confident_*``), how many it would retire by the machine's rule
    (``sure_enough`` with its ancestors' predictions) and how many of those right (``*retire*``),
    and the same for everything its line would have retired so far (``retired_gold_*``, see
    ``replay_on_gold``); with ``validation`` (subjects and crowd labels) also the accuracy on those
    and on gold and validation together (``comparison_accuracy``, the promotion rule's).
    ``gold_probs``: the gold predictions to measure (``calibrate_on_gold``'s); predicted if absent.
    ``line``: the versions promoted before this one, oldest first: ``(gold_predictions, trained)``.
    ``on_batch``: called after each ``inference_batch`` of validation subjects (a run's heartbeat).
    ``key``: the question measured (default: the machine's first); ``gold``, ``validation`` and
    ``line`` are then that question's. ``validation_probs``: the validation subjects' predictions of
    it, if already made (``predict_in_batches``)."""
    from ml import metrics

    if key is None:
        key = agents.machine_heads(workflow)[0][0]
    ids, y = gold if gold is not None else training_data.gold_sets(workflow)[key]
    out: dict[str, Any] = {}
    if validation is not None and validation[0]:
        v_probs = validation_probs if validation_probs is not None else predict_in_batches(
            classifier, validation[0], cfg, on_batch)[key]
        right = int((v_probs.argmax(axis=1) == validation[1]).sum())
        out = {"validation_accuracy": right / len(validation[0]), "n_validation": len(validation[0])}
    if not ids:
        return out | {"accuracy": None, "balanced_accuracy": None, "ece": None, "confusion": None, "n_gold_test": 0}
    if gold_probs is None:
        gold_probs = classifier.predict_proba(training_data.load_images(ids, classifier.config.image_size), tta=cfg["tta"])[key]
    probs = np.asarray(gold_probs)
    confident = probs.max(axis=1) >= cfg["machine_threshold"]
    retire, answers = gold_gate.replay_on_gold(ids, probs, line, cfg)
    retired = answers >= 0
    if out:
        gold_right = int((probs.argmax(axis=1) == y).sum())
        out["comparison_accuracy"] = (gold_right + right) / (len(ids) + len(validation[0]))
        losses = metrics.log_losses(np.concatenate([probs, v_probs]), np.concatenate([y, validation[1]]))
        out["comparison_log_loss"] = float(losses.mean())
        out[COMPARISON_LOSSES] = losses  # for the paired comparison at promotion; not stored
    return out | {
        "accuracy": metrics.accuracy(probs, y),
        "log_loss": metrics.log_loss(probs, y),
        "balanced_accuracy": metrics.balanced_accuracy(probs, y),
        "ece": metrics.ece(probs, y),
        "confusion": metrics.confusion(probs, y).tolist(),
        "n_gold_test": len(ids),
        "confident_share": float(confident.mean()),
        "n_confident": int(confident.sum()),
        "confident_accuracy": metrics.accuracy(probs[confident], y[confident]) if confident.any() else None,
        "n_retire_gold": int(retire.sum()),
        "retire_share": float(retire.mean()),
        "retire_accuracy": metrics.accuracy(probs[retire], y[retire]) if retire.any() else None,
        "n_retired_gold": int(retired.sum()),
        "retired_gold_accuracy": float(np.mean(answers[retired] == y[retired])) if retired.any() else None,
        # The same record split by the answer retired with: [retired, right] per answer.
        "retired_gold_by_answer": [[int((answers == k).sum()), int(((answers == k) & (y == k)).sum())] for k in range(probs.shape[1])],
    }


def predict_in_batches(classifier: Any, subject_ids: Sequence[int], cfg: dict,
                       on_batch: Callable[[], None] | None = None) -> dict[str, np.ndarray]:
    """Every head's probabilities for these subjects, ``inference_batch`` at a time: the validation
    subjects are a share of all the human-retired ones, without bound, and a training run must keep
    beating (``on_batch``, after each batch) while they are predicted."""
    parts: dict[str, list[np.ndarray]] = {key: [] for key, _ in classifier.heads}
    for start in range(0, len(subject_ids), cfg["inference_batch"]):
        batch = training_data.load_images(subject_ids[start : start + cfg["inference_batch"]], classifier.config.image_size)
        for key, probs in classifier.predict_proba(batch, tta=cfg["tta"]).items():
            parts[key].append(probs)
        if on_batch is not None:
            on_batch()
    return {key: np.concatenate(p) if p else np.empty((0, k)) for (key, k), p in zip(classifier.heads, parts.values(), strict=True)}
