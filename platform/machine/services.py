"""Services of the machine in the loop: train, evaluate, promote, predict, rank, roll back.

Design (each choice, and why):
- The machine is one agent per workflow (``MachineAgent``: a ``Volunteer`` row). Its predictions
  are ordinary ``Classification`` rows with ``metadata = {"model_version": N, "probabilities": [...],
  "acquisition": score, "machine_retire": bool}``, so they go through the live loop's exactly-once
  application log like any vote, and ``rebuild_aggregation`` replays them. The engine learns the
  machine's confusion matrix (or one per level of its confidence: ``live.engine.MACHINE_AGENTS``) as it
  learns anyone's: from gold subjects (every version predicts every
  unretired subject, gold ones included, and gold answers teach skills whether or not they count)
  and, for counted answers, from the consensus and the refits.
- Counting: a subject gets at most one *counted* machine answer, the first one made by a "trained"
  version (the database's one-counted-per-volunteer constraint enforces it). Later versions'
  predictions of the same subject are stored with ``counts=False``: successive versions of one CNN
  are strongly correlated, and counting each would add the same evidence again and again. An
  untrained version's predictions never count (they only teach the engine its skill on gold).
- Machine retirement: a prediction asks to retire its subject (``machine_retire``) only if the
  version is trained, the workflow allows it, the subject is not gold, and the mean of its
  probabilities and those of the versions promoted before it (``retirement_versions`` in all) gives
  its answer at least ``machine_threshold``. Why not this version alone: every promotion re-predicts
  every unretired subject, so a subject whose probability wavers about the threshold is retired by
  whichever version happens to rise above it; in a 6,493-galaxy run (threshold 0.93, 22 versions)
  the machine-retired galaxies were 93.9% right though each version was 97-100% right on the gold
  galaxies above the threshold, and those where the previous version had been below 0.8 were 82%
  right. Where the two versions' mean reached the threshold they were 96.9% right. The engine (``live.engine``) then retires the subject with
  reason ``"machine"`` if the subject's posterior, with every answer so far, agrees with the
  machine's answer; the live loop trusts the flag only from a machine agent.
- "Trained" (GZX's criterion): gold accuracy >= ``min_gold_accuracy`` on >= ``min_gold_subjects``
  gold subjects, for this version and its ancestors (``stable_versions`` in all), with none more
  than ``stability_tolerance`` below an older one of them; and, because machine retirement acts only
  where the CNN is sure, accuracy >= ``min_retire_accuracy`` on the gold subjects its line would
  have retired so far, by the rule it retires by (the mean of a version's and its ancestors'
  probabilities reaching ``machine_threshold``, ``retirement_versions`` in all), replayed on the
  gold subjects version by version (``replay_on_gold``), at least ``min_gold_subjects`` of them.
  Once a version is trained its successors stay so unless that record shows, with probability
  ``retire_stop_confidence``, that the line retires less accurately than the bar (hysteresis: the
  record moves by a point with one or two gold subjects). With ``retire_record``
  "per_answer" (not the default: one full run measured no gain, see ``machine.config``) the record
  and the bar are per answer retired with, and the machine retires only with the answers that pass
  (``certified_answers``): the overall record is mostly the common answer's, and a GZ1 machine 98.7%
  right on "smooth" was 92.6% right on "featured".
  The overall bar alone is the wrong one: on GZ1 a CNN trained on 1,500 retired galaxies was right
  on 82% of gold overall but on 99% of the third it was sure of.
- Calibration: the CNN learns from the crowd's consensus, whose mistakes can be skewed (in the
  GZ1 simulation the engine called 13% of smooth galaxies featured at posterior 0.99, but 1% of
  featured ones smooth): fitted to it, the CNN could never be 90% sure of a smooth galaxy. After
  training, each version's logits are refitted (a scale and a bias per answer, ``ml.calibration``)
  to the experts' answers on every gold subject, and measured out of fold: the gold subjects are
  cut into ``calibration_folds`` folds by a hash of their id, and each fold is measured with a
  calibration fitted on the others (``calibrate_on_gold``). Every gold subject measures, none with a
  calibration it helped fit; each version keeps its out-of-fold gold predictions
  (``ModelVersion.gold_predictions``) so that its successors' retirement rule can be measured.
- Pretraining: before its first version the CNN's trunk learns, self-supervised, from the images
  of the workflow's non-gold subjects (``pretrain_machine``, ``ml.pretrain``; once, on the "ml"
  queue, holding the training key), and the first version is fine-tuned from it. A project has all
  its images before its first vote, while its first versions learn from a few hundred retired
  subjects: on GZ1 a pretrained trunk fine-tuned on 200-1,000 galaxies was 1.5-2 points more accurate
  than one learnt from scratch (``bench/cnn_pretraining.py``).
- Training data: subjects retired by humans (not by the machine: it would learn its own mistakes
  back), with the engine's posterior of the first question as soft labels, except a stable
  ``validation_share`` of them (by a hash of the subject id). Gold subjects are never trained on:
  they are the held-out test set for the metrics. A new version is warm-started from the one serving
  (``partial_fit``) on all of them (a random sample of ``max_train`` at most).
- Promotion: a new version is promoted only if it is better than the one serving, both measured now
  on the same held-out subjects: a log loss on the gold set plus the validation subjects (their
  label: the crowd's) no worse than the serving version's by more than ``promotion_tolerance``
  standard errors of the paired difference (see ``is_better`` for why a tolerance). Gold alone is too small a set to tell versions apart (its accuracy's standard
  error is about 4 points at 100 subjects: a lucky early version would block every successor), and
  accuracy is the wrong yardstick: it ignores how sure the CNN is, which is what machine retirement
  acts on. A trained candidate also beats an untrained serving version and an untrained one never
  replaces a trained one, whatever their log losses: in a 6,493-galaxy run a version with a better
  log loss but a gold accuracy 3 points below its parent's (so not "stable", not trained) was
  promoted, and the next four trained versions were rejected against it: nothing retired meanwhile.
  Judged on accuracy, in a 6,500-galaxy benchmark run an early version that was sure of
  10% of gold blocked eight successors trained on twice the data and sure of 30% at 99% accuracy,
  because they were one point less accurate overall (within noise). Log loss, a proper scoring rule,
  uses every subject's probability. The first version is promoted (nothing to
  compare with; it retires nothing before it is trained). Promotion predicts every unretired subject
  in batches and ranks them for humans.
- Ranking: each unretired, non-gold subject's queue priority is its rank by acquisition score,
  scaled into (0, 1); a random ``exploration_share`` of them get a uniform random priority instead,
  so every stretch of the queue holds about that share of random subjects.
- One training run at a time, and a lost one found out: a request sets the workflow's Redis key
  (``training_key``) until its task ends, but a worker killed mid-run never clears it nor ends its
  version, left TRAINING. So a run beats (``heartbeat``): at every optimiser step, every batch of
  predictions and between its stages (at most every ``HEARTBEAT_SECONDS``) it stamps its version's
  ``heartbeat_at`` and cuts the key's time to live to ``HEARTBEAT_LIMIT_SECONDS``. A run silent
  longer than that is lost: ``retraining_due`` marks its version FAILED and no longer waits for it
  (Celery redelivers the killed task itself: ``acks_late``, ``task_reject_on_worker_lost``). The
  verdict rests on the row, in PostgreSQL, not on the key: Redis is hot state that may be flushed,
  and a live run must not be failed because a cache forgot it. The key covers what has no TRAINING
  row: a run still queued (``TRAINING_QUEUED_SECONDS`` at most) and the predictions that end a run
  once its version is promoted.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from typing import Any

import numpy as np
from django.core.cache import cache
from django.db import IntegrityError, OperationalError, connection, transaction
from django.db.models import F, Max
from django.utils import timezone
from scipy.stats import beta as beta_distribution

from classifications.models import Classification, Volunteer
from classifications.signals import classifications_stored
from live.engine import MACHINE_REASON, MACHINE_RETIRE_KEY
from machine.config import settings_of
from machine.models import MachineAgent, ModelVersion
from machine.selectors import current_model
from projects.models import SubjectImage, SubjectWorkflowState, Workflow
from projects.services import log_admin_action

logger = logging.getLogger(__name__)

State = ModelVersion.State
# A requested run's key lasts this long until the run starts (its first heartbeat cuts it to the
# limit below). The "ml" queue carries every workflow's training and prediction tasks, so a run may
# wait behind several; a task lost before it starts (the broker lost it, publishing failed) blocks
# its workflow's retraining this long, and a run still queued after it may be requested twice.
TRAINING_QUEUED_SECONDS = 1800
# A running run beats at most this often: one UPDATE and one Redis command, nothing at this rate.
HEARTBEAT_SECONDS = 30
# A run silent this long is lost. It beats at every optimiser step (64 images of 64 px: 0.3 s on the
# 2 quiet CPU cores, 2.5 s with them contended) and every prediction batch, so its longest silence is
# a stage done in one call: loading the training images (20,000 at 1.7 ms each quiet: 34 s) or
# calibrating on the gold subjects (2,000 of them with tta: 40 s quiet). Ten minutes is several
# times that even on contended cores. Beating per epoch instead would not do: an epoch of 20,000
# subjects at 64 px took 1.5 minutes on the quiet cores and 13 with them contended.
HEARTBEAT_LIMIT_SECONDS = 600
LOST_RUN_ERROR = f"worker lost: its training run sent no heartbeat for {HEARTBEAT_LIMIT_SECONDS} s"
# A pretraining run whose worker died (killed, out of memory) records nothing but "running"; the
# beat asks for it again once its key lapses. This many tries, then it is recorded as failed and the
# first version starts from random weights: a run that kills its worker every time (too many images
# for the worker's memory) would otherwise hold the machine's training back for good.
PRETRAINING_ATTEMPTS = 3
_IMAGE_CACHE: dict[tuple[str, int], np.ndarray] = {}
_IMAGE_CACHE_MAX = 50_000


def machine_settings(workflow: Workflow) -> dict[str, Any]:
    return settings_of(workflow.active_learning)


def first_question(workflow: Workflow) -> tuple[str, int]:
    """The question the CNN answers: the workflow's first task (single choice), and its answer count."""
    key = workflow.tasks["first_task"]
    task = workflow.tasks["tasks"][key]
    if task.get("type") != "single":
        raise ValueError(f"the machine answers a single-choice first question; {key!r} is {task.get('type')!r}")
    return key, len(task["answers"])


def machine_agent(workflow: Workflow) -> MachineAgent:
    """The workflow's machine agent, created (with its Volunteer) the first time."""
    agent = MachineAgent.objects.filter(workflow=workflow).first()
    if agent is not None:
        return agent
    with transaction.atomic():
        Workflow.objects.select_for_update().filter(pk=workflow.pk).first()
        agent = MachineAgent.objects.filter(workflow=workflow).first()
        if agent is None:
            agent = MachineAgent.objects.create(workflow=workflow, volunteer=Volunteer.objects.create())
    return agent


# --- data -------------------------------------------------------------------------------------------


def _image_paths(subject_ids: Sequence[int]) -> dict[int, str]:
    """Each subject's first image, as a file path (Django's storage)."""
    paths: dict[int, str] = {}
    for image in SubjectImage.objects.filter(subject_id__in=list(subject_ids)).order_by("subject_id", "position"):
        paths.setdefault(image.subject_id, image.file.path)
    missing = set(subject_ids) - set(paths)
    if missing:
        raise ValueError(f"subjects without an image: {sorted(missing)[:10]}")
    return paths


def load_images(subject_ids: Sequence[int], image_size: int) -> np.ndarray:
    """uint8 ``(N, S, S, 3)`` views of the subjects' first images, cached in this process."""
    from ml.images import load_image

    paths = _image_paths(subject_ids)
    out = np.empty((len(subject_ids), image_size, image_size, 3), dtype=np.uint8)
    for i, subject_id in enumerate(subject_ids):
        key = (paths[subject_id], image_size)
        image = _IMAGE_CACHE.get(key)
        if image is None:
            image = load_image(paths[subject_id], image_size)
            if len(_IMAGE_CACHE) < _IMAGE_CACHE_MAX:
                _IMAGE_CACHE[key] = image
        out[i] = image
    return out


def training_set(workflow: Workflow) -> tuple[list[int], np.ndarray]:
    """Human-retired, non-gold subjects and their first-question posteriors (soft labels)."""
    key, k = first_question(workflow)
    rows = (
        SubjectWorkflowState.objects.filter(workflow=workflow, status=SubjectWorkflowState.Status.RETIRED, is_gold=False)
        .exclude(retirement_reason=MACHINE_REASON)
        .exclude(posterior=None)
        .order_by("subject_id")
        .values_list("subject_id", "posterior")
    )
    ids, labels = [], []
    for subject_id, posterior in rows:
        p = (posterior or {}).get(key)
        if isinstance(p, list) and len(p) == k:
            ids.append(subject_id)
            labels.append(p)
    return ids, np.asarray(labels, dtype=np.float64).reshape(-1, k)


def gold_set(workflow: Workflow) -> tuple[list[int], np.ndarray]:
    """The held-out test set: gold subjects with their experts' answer to the first question."""
    key, k = first_question(workflow)
    ids, labels = [], []
    rows = SubjectWorkflowState.objects.filter(workflow=workflow, is_gold=True).order_by("subject_id")
    for subject_id, gold in rows.values_list("subject_id", "subject__gold"):
        value = (gold or {}).get(key)
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < k:
            ids.append(subject_id)
            labels.append(value)
    return ids, np.asarray(labels, dtype=np.int64)


Labelled = tuple[list[int], np.ndarray]  # subject ids and their labels, row for row


def sample_at_most(n: int, limit: int, seed: int) -> np.ndarray:
    """Sorted indices of a seeded random sample of ``limit`` of ``n`` items (all of them if fewer)."""
    if n <= limit:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, limit, replace=False))


def split_by_id(subjects: Labelled, share: float) -> tuple[Labelled, Labelled]:
    """(held-out part, the rest): a stable pseudo-random ``share`` of the subjects, by id."""
    ids, labels = subjects
    held = np.array([is_held_out(i, share) for i in ids], dtype=bool)
    return ([i for i, h in zip(ids, held, strict=True) if h], labels[held]), ([i for i, h in zip(ids, held, strict=True) if not h], labels[~held])


def gold_fold(subject_id: int, folds: int) -> int:
    """A gold subject's calibration fold: a stable pseudo-random one of ``folds``, by id (with two
    folds, fold 0 is ``is_held_out(subject_id, 0.5)``)."""
    return ((subject_id * 2654435761) % 2**32) * folds >> 32


def calibrate_on_gold(classifier: Any, gold: Labelled, cfg: dict) -> np.ndarray:
    """Calibrate ``classifier`` on the experts' answers to every gold subject and return the gold
    subjects' out-of-fold probabilities of the first question (``GalaxyClassifier.cross_calibrate``,
    ``calibration_folds`` folds): what measures it. With ``calibration_folds`` 0, or where a fold's
    complement has fewer than ``min_gold_subjects`` gold subjects (small projects), no calibration:
    the plain predictions, all of them measuring."""
    ids, y = gold
    key = classifier.heads[0][0]
    images = load_images(ids, classifier.config.image_size)
    k = cfg["calibration_folds"]
    if k >= 2 and ids:
        folds = np.array([gold_fold(i, k) for i in ids])
        if len(set(folds.tolist())) >= 2 and min(int((folds != f).sum()) for f in range(k)) >= cfg["min_gold_subjects"]:
            return classifier.cross_calibrate(images, {key: y}, folds, tta=cfg["tta"])[key]
    return classifier.predict_proba(images, tta=cfg["tta"])[key]


def human_retired_count(workflow: Workflow) -> int:
    return (
        SubjectWorkflowState.objects.filter(workflow=workflow, status=SubjectWorkflowState.Status.RETIRED, is_gold=False)
        .exclude(retirement_reason=MACHINE_REASON)
        .count()
    )


# --- metrics ----------------------------------------------------------------------------------------


def is_held_out(subject_id: int, share: float) -> bool:
    """The validation subjects: a stable pseudo-random share of the subjects, by id."""
    return (subject_id * 2654435761) % 2**32 < share * 2**32


def evaluate(
    classifier: Any, workflow: Workflow, cfg: dict, gold: tuple[list[int], np.ndarray] | None = None,
    validation: tuple[list[int], np.ndarray] | None = None, *, gold_probs: np.ndarray | None = None,
    line: Sequence[tuple[Mapping[str, Sequence[float]], bool]] = (), on_batch: Callable[[], None] | None = None,
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
    ``on_batch``: called after each ``inference_batch`` of validation subjects (a run's heartbeat)."""
    from ml import metrics

    key, _ = first_question(workflow)
    ids, y = gold if gold is not None else gold_set(workflow)
    out: dict[str, Any] = {}
    if validation is not None and validation[0]:
        # In batches: the validation subjects are a share of all the human-retired ones, without
        # bound, and a training run must keep beating while they are predicted.
        parts = []
        for start in range(0, len(validation[0]), cfg["inference_batch"]):
            batch = load_images(validation[0][start : start + cfg["inference_batch"]], classifier.config.image_size)
            parts.append(classifier.predict_proba(batch, tta=cfg["tta"])[key])
            if on_batch is not None:
                on_batch()
        v_probs = np.concatenate(parts)
        right = int((v_probs.argmax(axis=1) == validation[1]).sum())
        out = {"validation_accuracy": right / len(validation[0]), "n_validation": len(validation[0])}
    if not ids:
        return out | {"accuracy": None, "balanced_accuracy": None, "ece": None, "confusion": None, "n_gold_test": 0}
    if gold_probs is None:
        gold_probs = classifier.predict_proba(load_images(ids, classifier.config.image_size), tta=cfg["tta"])[key]
    probs = np.asarray(gold_probs)
    confident = probs.max(axis=1) >= cfg["machine_threshold"]
    retire, answers = replay_on_gold(ids, probs, line, cfg)
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


def replay_on_gold(
    ids: Sequence[int], probs: np.ndarray, line: Sequence[tuple[Mapping[str, Sequence[float]], bool]], cfg: dict,
) -> tuple[np.ndarray, np.ndarray]:
    """The machine's retirements replayed on the gold subjects, as if they were ordinary ones.

    Returns (``now``: the gold subjects this version would retire by the machine's rule, its mean
    with the ``retirement_versions - 1`` versions before it; ``answers``: for every gold subject the
    answer it would have been retired with by this version or a trained one of its ``line``, the
    first whose rule fired, or -1). Why both: every promotion re-predicts every unretired subject,
    so a subject the first versions were unsure of gets a new chance at each; the easy ones retire
    at the first pass and what crosses the threshold later is the wavering rest. In a GZ1 run the
    first trained version retired 2,477 galaxies 96% right, and the next seven, each 97-100% right on
    the gold it was sure of, retired 1,043 more, 91% right. The gold subjects are never retired, so
    every version predicts them: replaying the line on them measures what the machine has retired
    in all, and that is what ``min_retire_accuracy`` bars."""
    answers = replay_line(ids, line, cfg)
    # This version: with fewer ancestors than the rule averages (the first ones, which retire
    # nothing yet) it is measured with those it has; that is what can make it "trained".
    earlier = [predictions for predictions, _ in line[max(0, len(line) - (cfg["retirement_versions"] - 1)):]][::-1]
    threshold = cfg["machine_threshold"]
    now = np.array([sure_enough(p, [e.get(str(i)) for e in earlier], threshold) for i, p in zip(ids, probs, strict=True)], dtype=bool)
    first_now = now & (answers < 0)
    answers[first_now] = np.asarray(probs).argmax(axis=1)[first_now]
    return now, answers


def replay_line(ids: Sequence[int], line: Sequence[tuple[Mapping[str, Sequence[float]], bool]], cfg: dict) -> np.ndarray:
    """For every gold subject, the answer the first trained version of ``line`` (oldest first) whose
    machine rule fired would have retired it with, or -1: ``replay_on_gold`` without the version
    being measured."""
    n_earlier, threshold = cfg["retirement_versions"] - 1, cfg["machine_threshold"]
    history = [predictions for predictions, _ in line]
    answers = np.full(len(ids), -1, dtype=np.int64)
    for t, (predictions, trained) in enumerate(line):
        earlier = history[max(0, t - n_earlier):t][::-1]
        if not trained or len(earlier) < n_earlier:  # it retired nothing (predict_unretired)
            continue
        for j, subject_id in enumerate(ids):
            p = predictions.get(str(subject_id))
            if answers[j] < 0 and p is not None and sure_enough(p, [e.get(str(subject_id)) for e in earlier], threshold):
                answers[j] = int(np.argmax(p))
    return answers


def trained_criterion(version: ModelVersion, cfg: dict) -> tuple[bool, str]:
    """GZX's "trained": good enough on gold, and stable across the last versions."""
    n_gold = version.metrics.get("n_gold_test") or 0
    if n_gold < cfg["min_gold_subjects"]:
        return False, f"{n_gold} gold subjects, {cfg['min_gold_subjects']} needed"
    chain = [version, *ancestors(version, cfg["stable_versions"] - 1)]
    if len(chain) < cfg["stable_versions"]:
        return False, f"{len(chain)} version(s) so far, {cfg['stable_versions']} needed for stability"
    accuracies = [v.metrics.get("accuracy") for v in chain]
    if any(a is None or a < cfg["min_gold_accuracy"] for a in accuracies):
        return False, f"gold accuracies {accuracies} not all >= {cfg['min_gold_accuracy']}"
    # Stable = no version fell more than the tolerance below an older one of the chain. A rise is not
    # instability: judged both ways, a weak trained version blocked every better successor (they
    # were "unstable" against it, so untrained, so never promoted over a trained one).
    drops = [older - newer for i, newer in enumerate(accuracies) for older in accuracies[i + 1:]]
    if max(drops, default=0.0) > cfg["stability_tolerance"]:
        return False, f"gold accuracies {accuracies} (newest first) fell by more than {cfg['stability_tolerance']}"
    # What the machine retires must be proven right on gold, not only its average answer: a CNN
    # right 84% of the time overall can be 99% right where it is sure, or 90%. Measured by the rule
    # it retires by, on every gold subject (out of fold), over everything its line would have
    # retired so far (``replay_on_gold``): each version checked alone, above the threshold, on half
    # the gold let through versions whose retirements were 90% right.
    per_answer = certified_answers(version, cfg)
    if per_answer is not None:
        answers, records = per_answer
        summary = f"gold accuracies {accuracies} >= {cfg['min_gold_accuracy']} and stable; " if answers else ""
        return bool(answers), summary + "; ".join(records)
    n_retired, accuracy = version.metrics.get("n_retired_gold") or 0, version.metrics.get("retired_gold_accuracy")
    if n_retired < cfg["min_gold_subjects"]:
        return False, (f"{n_retired} gold subjects its line would have retired ({cfg['retirement_versions']} version(s)' mean >= "
                       f"{cfg['machine_threshold']}), {cfg['min_gold_subjects']} needed")
    if accuracy is None:
        return False, f"no accuracy on the {n_retired} gold subjects its line would have retired"
    right = round(accuracy * n_retired)
    record = f"{right} of the {n_retired} gold subjects its line would have retired right ({accuracy:.3f})"
    retiring = version.parent is not None and version.parent.is_trained
    trained, test = record_passes(right, n_retired, retiring, cfg)
    if retiring:
        test += " (the line was trained)"
    if not trained:
        return False, f"{record}: {test}"
    return True, f"gold accuracies {accuracies} >= {cfg['min_gold_accuracy']} and stable; {record}: {test}"


def record_passes(right: int, n: int, retiring: bool, cfg: dict) -> tuple[bool, str]:
    """Whether a gold record of ``right`` of ``n`` lets the machine retire, and the test in words.

    Hysteresis (see the module docstring): a line starts retiring when its record reaches
    ``min_retire_accuracy`` and, once ``retiring``, stops only when the record shows with
    ``retire_stop_confidence`` (Beta posterior, uniform prior) that it is below."""
    bar, confidence = cfg["min_retire_accuracy"], cfg["retire_stop_confidence"]
    if retiring:
        below = float(beta_distribution.cdf(bar, right + 1, n - right + 1))
        passed = below <= confidence
        return passed, f"below {bar} with probability {below:.2f} {'<=' if passed else '>'} {confidence}"
    passed = right / n >= bar
    return passed, f"{'>=' if passed else '<'} {bar}"


def certified_answers(version: ModelVersion, cfg: dict) -> tuple[list[int], list[str]] | None:
    """The answers the machine may retire with, and each answer's record; ``None`` where records per
    answer do not apply (``retire_record`` "overall", or a version measured without them).

    An answer is certified as the whole line is in ``trained_criterion``, on the gold subjects the
    line would have retired *with that answer* (``retired_gold_by_answer``): at least
    ``min_gold_subjects`` of them, and right on ``min_retire_accuracy`` of them to start; once the
    parent retired with it, until the record shows with ``retire_stop_confidence`` that it is below.
    Why per answer: the overall record is mostly the common answer's. In a 6,493-galaxy GZ1 run
    (seed 1, run 35) the machine's "smooth" retirements were 98.7% right and its "featured" ones
    92.6% (41 of its 75 errors on 18% of its retirements), while the overall gold record stood at
    0.97-0.98: the CNN's minority answer near the threshold is wrong far more often than its
    calibrated probability says, and the 100 featured gold galaxies could not show that to the
    calibration. Replayed offline on that run's 30 versions, the featured record never reached the
    bar for long, and the machine's retirements went from 97.8% to 98.5% right."""
    by_answer = version.metrics.get("retired_gold_by_answer")
    if cfg["retire_record"] != "per_answer" or by_answer is None:
        return None
    parent_answers = version.parent.retire_answers if version.parent is not None and version.parent.is_trained else []
    answers, records = [], []
    for answer, (n, right) in enumerate(by_answer):
        record = f"answer {answer}: {right} of {n} right"
        if n < cfg["min_gold_subjects"]:
            records.append(f"{record}, {cfg['min_gold_subjects']} needed")
            continue
        retiring = parent_answers is None or answer in parent_answers
        certified, test = record_passes(right, n, retiring, cfg)
        records.append(f"{record}, {test} (the line retired with it)" if retiring else f"{record} ({right / n:.3f} {test})")
        if certified:
            answers.append(answer)
    return answers, records


COMPARISON_LOSSES = "comparison_losses"


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
    machine retire what it has newly learnt. With a strict comparison, in a 6,493-galaxy run the
    last five trained versions (a fifth of the run) were rejected by 0.002-0.01 nats, within the
    noise of some 750 held-out subjects, and the machine stopped retiring."""
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


# --- training ---------------------------------------------------------------------------------------


def training_key(workflow_id: int) -> str:
    """Set (in Redis) from the request of a training run until its task ends: one run at a time.
    Its run's heartbeats keep it for ``HEARTBEAT_LIMIT_SECONDS`` at a time (see the module docstring)."""
    return f"machine:training-queued:{workflow_id}"


def heartbeat(version: ModelVersion) -> None:
    """Mark ``version``'s training run alive now: its ``heartbeat_at``, and the workflow's training
    key for ``HEARTBEAT_LIMIT_SECONDS`` more. ``touch`` only shortens or extends a key that is set:
    a run started in this process (``manage.py train_model``) was never requested, holds none, and
    must not leave one behind it."""
    version.heartbeat_at = timezone.now()  # and in memory, or the run's final save() would put back the first one
    ModelVersion.objects.filter(pk=version.pk).update(heartbeat_at=version.heartbeat_at)
    keep_training_key(version.workflow_id)


def keep_training_key(workflow_id: int) -> None:
    """The workflow's training key (a run queued or alive) lasts ``HEARTBEAT_LIMIT_SECONDS`` more, if set."""
    cache.touch(training_key(workflow_id), HEARTBEAT_LIMIT_SECONDS)


def every_heartbeat_seconds(signal: Callable[[], None]) -> Callable[..., None]:
    """A callback for every optimiser step, prediction batch or stage of a run (whatever it is
    passed) that calls ``signal()`` once ``HEARTBEAT_SECONDS`` have passed since the last call."""
    last = time.monotonic()

    def beat(*_: object) -> None:
        nonlocal last
        if time.monotonic() - last >= HEARTBEAT_SECONDS:
            signal()
            last = time.monotonic()

    return beat


def heartbeat_every(version: ModelVersion) -> Callable[..., None]:
    """``heartbeat(version)`` at most every ``HEARTBEAT_SECONDS``, for every step of its run."""
    return every_heartbeat_seconds(lambda: heartbeat(version))


def fail_lost_runs(workflow: Workflow) -> int:
    """Mark FAILED the workflow's versions still training whose run has been silent longer than
    ``HEARTBEAT_LIMIT_SECONDS`` (its worker was killed: nothing else would ever end them); returns
    how many. The condition is in the UPDATE, so a heartbeat committed meanwhile saves its run. A
    run wrongly found lost (one stage silent longer than the limit) still ends as usual, its final
    save() overwriting the verdict; the run requested meanwhile is then merely one more version."""
    silent_since = timezone.now() - timedelta(seconds=HEARTBEAT_LIMIT_SECONDS)
    lost = ModelVersion.objects.filter(workflow=workflow, state=State.TRAINING, heartbeat_at__lt=silent_since)
    n = lost.update(state=State.FAILED, error=LOST_RUN_ERROR)
    if n:
        logger.warning("workflow %s: %s training run(s) lost (no heartbeat for %s s); marked failed", workflow.pk, n, HEARTBEAT_LIMIT_SECONDS)
    return n


def training_in_progress(workflow: Workflow) -> bool:
    """Whether a training run of ``workflow`` is queued or alive: its key is set, or a version is
    training whose run beats (lost runs are marked FAILED first, ``fail_lost_runs``)."""
    fail_lost_runs(workflow)
    return bool(cache.get(training_key(workflow.pk))) or ModelVersion.objects.filter(workflow=workflow, state=State.TRAINING).exists()


def load_classifier(version: ModelVersion) -> Any:
    from ml import GalaxyClassifier

    return GalaxyClassifier.from_bytes(bytes(version.model))


def train_model_version(workflow_id: int, reason: str = "manual", promote: bool = True) -> ModelVersion | None:
    """One training run: a new ModelVersion, warm-started from the one serving, evaluated on gold,
    and promoted if better (its predictions then enter the engine). None if too few retired subjects."""
    from ml import GalaxyClassifier

    workflow = Workflow.objects.get(pk=workflow_id)
    cfg = machine_settings(workflow)
    key, k = first_question(workflow)
    (validation_ids, validation_soft), (ids, soft) = split_by_id(training_set(workflow), cfg["validation_share"])
    validation = (validation_ids, validation_soft.argmax(axis=1))  # the crowd's answer
    if len(ids) < cfg["min_train"]:
        logger.info("workflow %s: %s human-retired subjects, %s needed to train", workflow_id, len(ids), cfg["min_train"])
        return None
    parent = current_model(workflow)
    with transaction.atomic():
        Workflow.objects.select_for_update().filter(pk=workflow.pk).first()
        number = (ModelVersion.objects.filter(workflow=workflow).aggregate(m=Max("version"))["m"] or 0) + 1
        version = ModelVersion.objects.create(
            workflow=workflow, version=number, parent=parent, reason=reason[:64], state=State.TRAINING,
            retired_seen=human_retired_count(workflow),
        )
    beat = heartbeat_every(version)
    try:
        heartbeat(version)  # from now on the key lapses within the limit if this worker is killed
        seed = cfg["seed"] + number
        if len(ids) > cfg["max_train"]:
            pick = sample_at_most(len(ids), cfg["max_train"], seed)
            ids, soft = [ids[i] for i in pick], soft[pick]
        warm = pretrained = None
        if parent is not None and parent.model:
            warm = load_classifier(parent)
            if warm.heads != ((key, k),):
                warm = None  # the question changed: start again
        if warm is not None:
            classifier = warm
            images = load_images(ids, classifier.config.image_size)
            beat()
            run = classifier.partial_fit(images, {key: soft}, epochs=cfg["warm_epochs"], batch_size=cfg["batch_size"], seed=seed,
                                         min_steps=cfg["min_steps"], on_step=beat)
        else:
            pretrained = pretrained_classifier(workflow, cfg, (key, k))
            classifier = pretrained or GalaxyClassifier([(key, k)], image_size=cfg["image_size"], seed=cfg["seed"])
            images = load_images(ids, classifier.config.image_size)
            beat()
            # From the pretrained trunk, the first version is a fine-tuning (partial_fit keeps its weights).
            first_fit = classifier.fit if pretrained is None else classifier.partial_fit
            run = first_fit(images, {key: soft}, epochs=cfg["epochs"], batch_size=cfg["batch_size"], seed=seed,
                            min_steps=cfg["min_steps"], on_step=beat)
        gold = gold_set(workflow)
        gold_probs = calibrate_on_gold(classifier, gold, cfg)
        beat()
        measured = evaluate(classifier, workflow, cfg, gold, validation, gold_probs=gold_probs, line=gold_line(version), on_batch=beat)
        losses = measured.pop(COMPARISON_LOSSES, None)
        version.gold_predictions = {str(i): [float(x) for x in p] for i, p in zip(gold[0], gold_probs, strict=True)}
        version.metrics = measured | {
            "n_train": len(ids), "train_seconds": round(float(run.get("train_seconds", 0.0)), 3), "warm_start": warm is not None,
            "from_pretrained": pretrained is not None,
            "n_gold_calibration": (classifier.calibration.get(key) or {}).get("n", 0), "calibration": classifier.calibration.get(key),
        }
        version.model = classifier.to_bytes()
        trained, why = trained_criterion(version, cfg)
        version.metrics |= {"trained": trained, "trained_reason": why}
        per_answer = certified_answers(version, cfg)
        if trained and per_answer is not None:
            version.metrics["retire_answers"] = per_answer[0]
        version.state = State.TRAINED
        version.trained_at = timezone.now()
        serving = None
        if parent is not None and promote:
            serving_classifier = load_classifier(parent)  # measured as the candidate is, cross-fitted on the same gold
            serving_gold_probs = calibrate_on_gold(serving_classifier, gold, cfg)
            beat()
            serving = evaluate(serving_classifier, workflow, cfg, gold, validation,
                               gold_probs=serving_gold_probs, on_batch=beat) | {"trained": parent.is_trained}
            serving_losses = serving.pop(COMPARISON_LOSSES, None)
            version.metrics["compared_with"] = {
                "version": parent.version, "accuracy": serving["accuracy"], "ece": serving["ece"],
                "comparison_accuracy": serving.get("comparison_accuracy"),
                "comparison_log_loss": serving.get("comparison_log_loss"),
            }
            if losses is not None and serving_losses is not None:
                version.metrics["log_loss_difference"] = log_loss_difference(losses, serving_losses)
        version.save()
    except Exception as error:
        ModelVersion.objects.filter(pk=version.pk).update(state=State.FAILED, error=repr(error)[:2000])
        raise
    if promote:
        if is_better(version.metrics, serving, cfg["promotion_tolerance"]):
            promote_model_version(version, predict="no")
            predict_unretired(version.pk, on_batch=beat)  # still this run: it beats (its key stays set)
        else:
            version.state = State.REJECTED
            version.save(update_fields=["state"])
            logger.info("workflow %s: model v%s not better than v%s; rejected", workflow_id, number, parent.version if parent else None)
    return version


def retraining_due(workflow: Workflow) -> bool:
    """Every ``retrain_every`` new human retirements (and none queued or running already; a lost
    run's version is marked FAILED and not waited for, ``training_in_progress``). A failed version,
    lost or not, counts as having seen the retirements it started with: a run that fails every time
    (out of memory, say) is not retried every beat; Celery redelivers a killed one itself."""
    cfg = machine_settings(workflow)
    if not cfg["enabled"] or training_in_progress(workflow):
        return False
    last = ModelVersion.objects.filter(workflow=workflow).defer("model").order_by("-version").first()
    count = human_retired_count(workflow)
    seen = last.retired_seen if last is not None else 0
    return count >= cfg["min_train"] and count - seen >= cfg["retrain_every"]


def request_retraining(workflow: Workflow, user: Any = None, reason: str = "manual") -> None:
    """Queue a training run on the "ml" queue (logged in the workflow's audit log)."""
    from machine.tasks import train_workflow

    cache.set(training_key(workflow.pk), 1, TRAINING_QUEUED_SECONDS)
    log_admin_action(workflow, user, "retrain", {"reason": reason})
    transaction.on_commit(lambda: train_workflow.delay(workflow.pk, reason))


def check_retraining() -> list[int]:
    """The scheduled trigger: queue a pretraining run for every workflow whose machine needs one
    (``pretraining_due``), else a training run where its retirements call for one."""
    queued = []
    for workflow in Workflow.objects.filter(active=True).exclude(active_learning={}):
        try:
            pretrain = pretraining_due(workflow)
            due = not pretrain and retraining_due(workflow)
        except ValueError as error:
            logger.error("workflow %s: invalid active_learning settings: %s", workflow.pk, error)
            continue
        if pretrain:
            request_pretraining(workflow)
            queued.append(workflow.pk)
        elif due:
            request_retraining(workflow, reason="retirements")
            queued.append(workflow.pk)
    return queued


# --- pretraining ------------------------------------------------------------------------------------


def pretraining_subjects(workflow: Workflow) -> list[int]:
    """The subjects whose images the trunk is pretrained on: every non-gold subject of the workflow
    that has an image (gold ones stay unseen in every way: they measure the machine)."""
    ids = SubjectWorkflowState.objects.filter(workflow=workflow, is_gold=False).values_list("subject_id", flat=True)
    return sorted(set(SubjectImage.objects.filter(subject_id__in=ids).values_list("subject_id", flat=True)))


def pretraining_due(workflow: Workflow) -> bool:
    """Once per machine and image size, before its first version: pretraining is on
    (``pretrain_epochs``), no version exists (a machine that already learnt gains nothing from it),
    it has not finished yet at the workflow's ``image_size`` (done or failed: a failed one is not
    retried, the first version then starts from random weights; one whose worker was lost is, up to
    ``PRETRAINING_ATTEMPTS`` tries), the workflow has at least ``min_train`` images to learn from,
    and no run is queued or alive. The cheap checks come first: the beat asks every workflow every
    30 s, and ``training_in_progress`` (an UPDATE) is asked again by ``retraining_due``."""
    cfg = machine_settings(workflow)
    if not cfg["enabled"] or cfg["pretrain_epochs"] == 0 or ModelVersion.objects.filter(workflow=workflow).exists():
        return False
    record = MachineAgent.objects.filter(workflow=workflow).values_list("pretraining", flat=True).first() or {}
    if record.get("image_size") == cfg["image_size"] and record.get("state") in ("done", "failed"):
        return False  # a trunk of another size (the setting changed since) would go unused: pretrain again
    return len(pretraining_subjects(workflow)) >= cfg["min_train"] and not training_in_progress(workflow)


def request_pretraining(workflow: Workflow, user: Any = None) -> None:
    """Queue the pretraining run on the "ml" queue; it holds the training key as a training run does
    (one run of a workflow's machine at a time), so training waits for it."""
    from machine.tasks import pretrain_workflow

    cache.set(training_key(workflow.pk), 1, TRAINING_QUEUED_SECONDS)
    log_admin_action(workflow, user, "pretrain", {})
    transaction.on_commit(lambda: pretrain_workflow.delay(workflow.pk))


def pretrain_machine(workflow_id: int) -> MachineAgent:
    """Pretrain the CNN's trunk, self-supervised, on the workflow's unlabelled images
    (``ml.GalaxyClassifier.pretrain``; a random sample of ``max_train`` at most) and keep it on the
    machine agent, where the first model version starts from (``pretrained_classifier``). The run
    is recorded as "running" with its attempt number before it starts, and keeps the training key
    alive at most every ``HEARTBEAT_SECONDS``: a worker killed mid-run lets the key lapse and the next
    beat requests the run again; the try after ``PRETRAINING_ATTEMPTS`` lost ones records a failure
    instead of running."""
    from ml import GalaxyClassifier

    workflow = Workflow.objects.get(pk=workflow_id)
    cfg = machine_settings(workflow)
    key, k = first_question(workflow)
    agent = machine_agent(workflow)
    ids = pretraining_subjects(workflow)
    if len(ids) > cfg["max_train"]:
        ids = [ids[i] for i in sample_at_most(len(ids), cfg["max_train"], cfg["seed"])]
    record: dict[str, Any] = {"image_size": cfg["image_size"], "n_images": len(ids), "epochs": cfg["pretrain_epochs"]}
    before = agent.pretraining or {}
    lost = before.get("attempts", 0) if before.get("state") == "running" and before.get("image_size") == cfg["image_size"] else 0
    if lost >= PRETRAINING_ATTEMPTS:
        agent.pretraining = record | {"state": "failed", "attempts": lost,
                                      "error": f"worker lost {lost} times (no heartbeat for {HEARTBEAT_LIMIT_SECONDS} s): not tried again"}
        agent.save(update_fields=["pretraining"])
        logger.warning("workflow %s: pretraining lost %s times; the first version starts from random weights", workflow_id, lost)
        return agent
    record["attempts"] = lost + 1
    agent.pretraining = record | {"state": "running"}
    agent.save(update_fields=["pretraining"])
    beat = every_heartbeat_seconds(lambda: keep_training_key(workflow_id))
    classifier = GalaxyClassifier([(key, k)], image_size=cfg["image_size"], seed=cfg["seed"])
    try:
        images = load_images(ids, cfg["image_size"])
        beat()
        run = classifier.pretrain(images, epochs=cfg["pretrain_epochs"], batch_size=256, on_step=beat)
    except Exception as error:
        agent.pretraining = record | {"state": "failed", "error": repr(error)[:2000]}
        agent.save(update_fields=["pretraining"])
        raise
    agent.pretrained_model = classifier.to_bytes()
    agent.pretraining = record | {
        "state": "done", "train_seconds": round(run["train_seconds"], 3), "chance_loss": run.get("chance_loss"),
        "loss": [round(row["loss"], 4) for row in run["epochs"]],
    }
    agent.save(update_fields=["pretrained_model", "pretraining"])
    logger.info("workflow %s: trunk pretrained on %s images in %.0f s", workflow_id, len(ids), run["train_seconds"])
    return agent


def pretrained_classifier(workflow: Workflow, cfg: dict, head: tuple[str, int]) -> Any:
    """A copy of the machine's pretrained trunk (random heads) if it fits the workflow's question and
    image size now, else None."""
    from ml import GalaxyClassifier

    blob = MachineAgent.objects.filter(workflow=workflow).values_list("pretrained_model", flat=True).first()
    if not blob:
        return None
    classifier = GalaxyClassifier.from_bytes(bytes(blob))
    if classifier.heads != (head,) or classifier.config.image_size != cfg["image_size"]:
        return None
    return classifier


# --- promotion, prediction, ranking -----------------------------------------------------------------


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
        predict_unretired(version.pk)
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


def acquisition_scores(
    method: str, probs: np.ndarray, mc_samples: np.ndarray | None, human: np.ndarray | None, rng: np.random.Generator
) -> np.ndarray:
    from ml import acquisition

    if method == "bald":
        return acquisition.bald(mc_samples)
    if method == "entropy":
        return acquisition.entropy(probs)
    if method == "disagreement":
        return acquisition.disagreement(probs, human)
    return rng.random(probs.shape[0])


def ancestors(version: ModelVersion, n: int) -> list[ModelVersion]:
    """The (at most) ``n`` versions promoted before ``version`` in its line: parent, grandparent, ..."""
    line: list[ModelVersion] = []
    ancestor = version.parent
    while ancestor is not None and len(line) < n:
        line.append(ancestor)
        ancestor = ancestor.parent
    return line


def gold_line(version: ModelVersion) -> list[tuple[dict, bool]]:
    """``(gold_predictions, trained)`` of every version promoted before ``version`` in its line,
    oldest first (one query, without the weights)."""
    rows = {pk: (parent, predictions, bool(trained)) for pk, parent, predictions, trained in ModelVersion.objects.filter(
        workflow_id=version.workflow_id).values_list("pk", "parent_id", "gold_predictions", "metrics__trained")}
    line, parent = [], version.parent_id
    while parent is not None and parent in rows and len(line) < len(rows):
        parent, predictions, trained = rows[parent]
        line.append((predictions, trained))
    return line[::-1]


def ancestor_versions(version: ModelVersion, n: int) -> list[int]:
    """The numbers of ``ancestors(version, n)``."""
    return [a.version for a in ancestors(version, n)]


def sure_enough(probs: np.ndarray, earlier: Sequence[Sequence[float] | None], threshold: float) -> bool:
    """Whether the machine may retire a subject: the mean of this version's probabilities and the
    earlier versions' (all of them known) gives this version's answer at least ``threshold``."""
    if any(p is None or len(p) != len(probs) for p in earlier):
        return False
    mean = np.mean([np.asarray(probs, dtype=float), *(np.asarray(p, dtype=float) for p in earlier)], axis=0)
    return int(mean.argmax()) == int(np.argmax(probs)) and float(mean.max()) >= threshold


def predict_unretired(version_id: int, on_batch: Callable[[], None] | None = None) -> dict[str, int]:
    """Predict every unretired subject with ``version`` in batches, store the predictions as the
    machine agent's classifications (the live loop applies them), and rank the queue. ``on_batch``:
    called before each batch (the heartbeat of the training run that promoted ``version``)."""
    version = ModelVersion.objects.select_related("workflow").get(pk=version_id)
    workflow = version.workflow
    serving = current_model(workflow)
    if serving is None or serving.pk != version.pk:
        logger.info("workflow %s: v%s no longer serves; predictions skipped", workflow.pk, version.version)
        return {"predicted": 0, "counted": 0, "retire_requests": 0}
    cfg = machine_settings(workflow)
    key, k = first_question(workflow)
    classifier = load_classifier(version)
    agent = machine_agent(workflow)
    trained = version.is_trained
    may_retire = trained and cfg["machine_retirement"]
    ancestors = ancestor_versions(version, cfg["retirement_versions"] - 1) if may_retire else []
    may_retire = may_retire and len(ancestors) == cfg["retirement_versions"] - 1  # too few versions yet: none
    retire_answers = version.retire_answers  # None: any answer
    rng = np.random.default_rng(cfg["seed"] + version.version)
    states = list(
        SubjectWorkflowState.objects.filter(workflow=workflow, status=SubjectWorkflowState.Status.ACTIVE)
        .order_by("subject_id")
        .values_list("subject_id", "is_gold", "posterior")
    )
    mine = Classification.objects.filter(workflow=workflow, volunteer=agent.volunteer)
    counted_before = set(mine.filter(counts=True).values_list("subject_id", flat=True))
    prefix = f"machine-v{version.version}-"
    # A retried task (see machine.tasks) skips what this version already predicted, keeping its scores.
    done = dict(mine.filter(idempotency_key__startswith=prefix, is_gold=False).values_list("subject_id", "metadata__acquisition"))
    done_gold = set(mine.filter(idempotency_key__startswith=prefix, is_gold=True).values_list("subject_id", flat=True))
    active_ids = {s[0] for s in states}
    scores: dict[int, float] = {sid: float(score) for sid, score in done.items() if sid in active_ids and score is not None}
    states = [s for s in states if s[0] not in done and s[0] not in done_gold]
    report = {"predicted": 0, "counted": 0, "retire_requests": 0}
    for start in range(0, len(states), cfg["inference_batch"]):
        if on_batch is not None:
            on_batch()
        batch = states[start : start + cfg["inference_batch"]]
        ids = [s[0] for s in batch]
        images = load_images(ids, classifier.config.image_size)
        probs = classifier.predict_proba(images, tta=cfg["tta"])[key]
        mc = None
        if cfg["acquisition"] == "bald":
            mc = classifier.mc_predict(images, cfg["mc_samples"], tta=cfg["tta"], seed=cfg["seed"] + version.version + start)[key]
        human = np.full((len(batch), k), 1.0 / k)
        for i, (_, _, posterior) in enumerate(batch):
            p = (posterior or {}).get(key)
            if isinstance(p, list) and len(p) == k:
                human[i] = p
        score = acquisition_scores(cfg["acquisition"], probs, mc, human, rng)
        earlier: dict[int, dict[int, list[float]]] = {}
        if may_retire and ancestors:
            for subject_id, number, p in mine.filter(subject_id__in=ids, metadata__model_version__in=ancestors).values_list(
                "subject_id", "metadata__model_version", "metadata__probabilities"
            ):
                earlier.setdefault(subject_id, {})[number] = p
        rows, counted = [], []
        for (subject_id, is_gold, _), p, s in zip(batch, probs, score, strict=True):
            counts = trained and subject_id not in counted_before
            retire = may_retire and not is_gold and (retire_answers is None or int(p.argmax()) in retire_answers) and sure_enough(
                p, [earlier.get(subject_id, {}).get(a) for a in ancestors], cfg["machine_threshold"])
            rows.append(Classification(
                workflow=workflow, subject_id=subject_id, volunteer=agent.volunteer,
                annotations=[{"task": key, "value": int(p.argmax())}],
                metadata={"model_version": version.version, "probabilities": [float(x) for x in p],
                          "acquisition": float(s), MACHINE_RETIRE_KEY: retire},
                idempotency_key=f"{prefix}{subject_id}", counts=counts, is_gold=is_gold,
            ))
            if counts:
                counted.append(subject_id)
            report["retire_requests"] += retire
            if not is_gold:
                scores[subject_id] = float(s)
        try:
            with transaction.atomic():
                created = Classification.objects.bulk_create(rows)
                SubjectWorkflowState.objects.filter(workflow=workflow, subject_id__in=counted).update(
                    classification_count=F("classification_count") + 1
                )
                new_ids = [c.pk for c in created]
                transaction.on_commit(lambda ids=new_ids: classifications_stored.send(
                    sender=Classification, classification_ids=ids, workflow_ids=[workflow.pk]))
        except IntegrityError:
            logger.warning("workflow %s: v%s batch predicted concurrently elsewhere; skipped", workflow.pk, version.version)
            continue
        report["predicted"] += len(rows)
        report["counted"] += len(counted)
    explored = update_priorities(workflow, scores, cfg["exploration_share"], seed=cfg["seed"] + version.version)
    report["explored"] = len(explored)
    logger.info("workflow %s: model v%s predicted %s", workflow.pk, version.version, report)
    return report


def update_priorities(workflow: Workflow, scores: dict[int, float], exploration_share: float, seed: int = 0) -> set[int]:
    """Queue priorities from acquisition scores, a random share of the subjects given a uniform random
    priority instead. The machine's term is its score's rank among these subjects, in (0, 1), stored
    as ``machine_score``; the priority adds it to the subject's value for humans (``@value`` of its
    posterior, or a new subject's) as the live loop does (``live.services.queue_priority``, see
    docs/queue.md). Returns the subjects chosen to explore."""
    from projects.services import fresh_value

    if not scores:
        return set()
    rnd = random.Random(seed)
    ids = sorted(scores)
    explored = set(rnd.sample(ids, round(exploration_share * len(ids))))
    ranked = sorted((i for i in ids if i not in explored), key=lambda i: (scores[i], -i))
    machine_score = {sid: (rank + 0.5) / len(ranked) for rank, sid in enumerate(ranked)}
    random_priority = {sid: rnd.random() for sid in sorted(explored)}
    subject_ids = list(machine_score) + list(random_priority)
    unseen = fresh_value(workflow)
    for attempt in range(5):
        try:
            with connection.cursor() as cursor:
                cursor.execute(
                    f"""
                    UPDATE {SubjectWorkflowState._meta.db_table} AS s
                       SET machine_score = v.score,
                           priority = COALESCE(v.fixed, (COALESCE((s.posterior->>'@value')::float, %s) + v.score)
                                               / (1 + COALESCE((s.posterior->>'@value')::float, %s) + v.score))
                      FROM unnest(%s::bigint[], %s::double precision[], %s::double precision[]) AS v(subject_id, score, fixed)
                     WHERE s.workflow_id = %s AND s.subject_id = v.subject_id
                    """,
                    [unseen, unseen, subject_ids, [machine_score.get(i) for i in subject_ids],
                     [random_priority.get(i) for i in subject_ids], workflow.pk],
                )
            break
        except OperationalError:  # a deadlock with the applier writing posteriors: PostgreSQL chose us
            if attempt == 4:
                raise
            time.sleep(0.2 * (attempt + 1))
    return explored
