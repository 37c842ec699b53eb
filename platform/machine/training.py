"""Training runs of the machine: when one is due, and what one does.

A run (``train_model_version``) makes a new ``ModelVersion``: it trains one head per question the
machine answers (``machine.agents.machine_heads``, with the tree's mirror swaps) on the
human-retired subjects (``machine.training_data``), warm-started from the version serving
(``partial_fit``, on all of them, a random sample of ``max_train`` at most) or, for the first
version, fine-tuned from the pretrained trunk (``machine.pretraining``) where there is one (a CNN
whose heads or mirror swaps differ from the workflow's now is not reused); it is calibrated on gold
and measured question by question (``machine.evaluation``), judged "trained" or not on each
(``machine.gold_gate``), and compared with the version serving, measured again now on the same
subjects; if better it is promoted (``machine.promotion``) and, still in this run, predicts every
unretired subject (``machine.prediction``). It beats throughout (``machine.heartbeat``).

A run is due every ``retrain_every`` new human retirements (``retraining_due``); the scheduled
trigger (``check_retraining``) asks for pretraining first where the machine needs it. A failed
version counts as having seen the retirements it started with, so a run that fails every time is
not retried at every beat.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from django.core.cache import cache
from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from machine import agents, evaluation, gold_gate, heartbeat, prediction, pretraining, promotion, training_data
from machine.config import machine_settings, question_settings
from machine.models import ModelVersion
from machine.selectors import current_model, gold_line
from projects.models import Workflow
from projects.services import log_admin_action

logger = logging.getLogger(__name__)

State = ModelVersion.State


def train_model_version(workflow_id: int, reason: str = "manual", promote: bool = True) -> ModelVersion | None:
    """One training run: a new ModelVersion, warm-started from the one serving, evaluated on gold
    question by question, and promoted if better (its predictions then enter the engine). None if too
    few retired subjects."""
    from ml import GalaxyClassifier

    workflow = Workflow.objects.get(pk=workflow_id)
    cfg = machine_settings(workflow)
    heads = agents.machine_heads(workflow)
    swaps = agents.mirror_swaps(workflow, heads)
    labelled = training_data.training_set(workflow)
    validation, (ids, soft) = training_data.split_by_id(labelled, cfg["validation_share"])
    if len(ids) < cfg["min_train"]:
        logger.info("workflow %s: %s human-retired subjects, %s needed to train", workflow_id, len(ids), cfg["min_train"])
        return None
    parent = current_model(workflow)
    with transaction.atomic():
        Workflow.objects.select_for_update().filter(pk=workflow.pk).first()
        number = (ModelVersion.objects.filter(workflow=workflow).aggregate(m=Max("version"))["m"] or 0) + 1
        version = ModelVersion.objects.create(
            workflow=workflow, version=number, parent=parent, reason=reason[:64], state=State.TRAINING,
            retired_seen=training_data.human_retired_count(workflow),
        )
    beat = heartbeat.heartbeat_every(version)
    try:
        heartbeat.heartbeat(version)  # from now on the key lapses within the limit if this worker is killed
        seed = cfg["seed"] + number
        if len(ids) > cfg["max_train"]:
            pick = training_data.sample_at_most(len(ids), cfg["max_train"], seed)
            ids, soft = [ids[i] for i in pick], {key: v[pick] for key, v in soft.items()}
        warm = pretrained = None
        if parent is not None and parent.model:
            warm = agents.load_classifier(parent)
            if not agents.fits(warm, heads, swaps):
                warm = None  # the questions or their mirror swaps changed: start again
        if warm is not None:
            classifier = warm
            images = training_data.load_images(ids, classifier.config.image_size)
            beat()
            run = classifier.partial_fit(images, soft, epochs=cfg["warm_epochs"], batch_size=cfg["batch_size"], seed=seed,
                                         min_steps=cfg["min_steps"], on_step=beat)
        else:
            pretrained = pretraining.pretrained_classifier(workflow, cfg, heads)
            classifier = pretrained or GalaxyClassifier(heads, image_size=cfg["image_size"], seed=cfg["seed"], mirror_swaps=swaps)
            images = training_data.load_images(ids, classifier.config.image_size)
            beat()
            # From the pretrained trunk, the first version is a fine-tuning (partial_fit keeps its weights).
            first_fit = classifier.fit if pretrained is None else classifier.partial_fit
            run = first_fit(images, soft, epochs=cfg["epochs"], batch_size=cfg["batch_size"], seed=seed,
                            min_steps=cfg["min_steps"], on_step=beat)
        measured, losses = _measure(classifier, workflow, cfg, heads, validation, version, beat)
        first = heads[0][0]
        version.gold_predictions = measured[first].pop("gold_predictions")
        version.gold_predictions_by_question = {key: m.pop("gold_predictions") for key, m in measured.items() if key != first}
        version.gold_predictions_by_question[first] = version.gold_predictions
        version.metrics = measured[first] | {"questions": measured}
        version.metrics |= {
            "n_train": len(ids), "train_seconds": round(float(run.get("train_seconds", 0.0)), 3), "warm_start": warm is not None,
            "from_pretrained": pretrained is not None,
        }
        version.model = classifier.to_bytes()
        _judge(version, cfg, heads)
        version.state = State.TRAINED
        version.trained_at = timezone.now()
        serving = None
        if parent is not None and promote:
            serving_classifier = agents.load_classifier(parent)  # measured as the candidate is, cross-fitted on the same gold
            serving_measured, serving_losses = _measure(serving_classifier, workflow, cfg, heads, validation, None, beat)
            serving = serving_measured[first] | {"trained": parent.is_trained}
            version.metrics["compared_with"] = {
                "version": parent.version, "accuracy": serving["accuracy"], "ece": serving["ece"],
                "comparison_accuracy": serving.get("comparison_accuracy"),
                "comparison_log_loss": serving.get("comparison_log_loss"),
            }
            if losses is not None and serving_losses is not None and len(losses) == len(serving_losses):
                version.metrics["log_loss_difference"] = promotion.log_loss_difference(losses, serving_losses)
        version.save()
    except Exception as error:
        ModelVersion.objects.filter(pk=version.pk).update(state=State.FAILED, error=repr(error)[:2000])
        raise
    if promote:
        if promotion.is_better(version.metrics, serving, cfg["promotion_tolerance"]):
            promotion.promote_model_version(version, predict="no")
            prediction.predict_unretired(version.pk, on_batch=beat)  # still this run: it beats (its key stays set)
        else:
            version.state = State.REJECTED
            version.save(update_fields=["state"])
            logger.info("workflow %s: model v%s not better than v%s; rejected", workflow_id, number, parent.version if parent else None)
    return version


def _measure(classifier: Any, workflow: Workflow, cfg: dict, heads: agents.Heads, validation: training_data.TreeLabelled,
             version: ModelVersion | None, beat: Any) -> tuple[dict[str, dict], Any]:
    """Each question calibrated on its gold and measured (``machine.evaluation``): ``{key: metrics}``,
    each with the question's out-of-fold ``gold_predictions`` and its calibration, and the per-subject
    log losses of every question's gold and validation subjects together (what promotion compares).
    ``version``: the candidate, whose line its rule is replayed over (None: the serving version,
    measured again for the comparison)."""
    gold = training_data.gold_sets(workflow)
    validation_probs = evaluation.predict_in_batches(classifier, validation[0], cfg, beat)
    measured: dict[str, dict] = {}
    losses: list = []
    for key, _ in heads:
        q_cfg = question_settings(cfg, key)
        on = training_data.labelled_on(validation, key)
        held = ~np.isnan(validation[1][key]).any(axis=1)
        gold_probs = evaluation.calibrate_on_gold(classifier, gold[key], q_cfg, key=key)
        beat()
        line = gold_line(version, key) if version is not None else ()
        metrics = evaluation.evaluate(classifier, workflow, q_cfg, gold[key], on, gold_probs=gold_probs, line=line, on_batch=beat,
                                      key=key, validation_probs=validation_probs[key][held])
        losses.append(metrics.pop(evaluation.COMPARISON_LOSSES, None))
        measured[key] = metrics | {
            "gold_predictions": {str(i): [float(x) for x in p] for i, p in zip(gold[key][0], gold_probs, strict=True)},
            "n_gold_calibration": (classifier.calibration.get(key) or {}).get("n", 0), "calibration": classifier.calibration.get(key),
        }
    # Paired subject by subject and question by question: the candidate and the serving version are
    # measured on the same subjects. Without the first question's (no gold), no paired comparison.
    return measured, (np.concatenate([x for x in losses if x is not None]) if losses[0] is not None else None)


def _judge(version: ModelVersion, cfg: dict, heads: agents.Heads) -> None:
    """The "trained" criterion question by question (``machine.gold_gate``), each with its own bars,
    written into the version's metrics: per question ``trained``, ``trained_reason``, the bars it was
    judged by and, retiring per answer, ``retire_answers``; at the top level ``trained`` (on any
    question), the first question's ``retire_answers`` and every question's reason."""
    reasons = []
    for key, _ in heads:
        q_cfg = question_settings(cfg, key)
        trained, why = gold_gate.trained_criterion(version, q_cfg, key)
        entry = version.metrics["questions"][key]
        entry |= {"trained": trained, "trained_reason": why,
                  "bars": {name: q_cfg[name] for name in ("min_gold_accuracy", "min_gold_subjects", "min_retire_accuracy", "machine_threshold")}}
        per_answer = gold_gate.certified_answers(version, q_cfg, key)
        if trained and per_answer is not None:
            entry["retire_answers"] = per_answer[0]
        reasons.append(why if len(heads) == 1 else f"{key}: {why}")
    first = version.metrics["questions"][heads[0][0]]
    version.metrics |= {"trained": any(m["trained"] for m in version.metrics["questions"].values()), "trained_reason": "; ".join(reasons)}
    if "retire_answers" in first:
        version.metrics["retire_answers"] = first["retire_answers"]


def retraining_due(workflow: Workflow) -> bool:
    """Every ``retrain_every`` new human retirements (and none queued or running already; a lost
    run's version is marked FAILED and not waited for, ``training_in_progress``). A failed version,
    lost or not, counts as having seen the retirements it started with: a run that fails every time
    (out of memory, say) is not retried every beat; Celery redelivers a killed one itself."""
    cfg = machine_settings(workflow)
    if not cfg["enabled"] or heartbeat.training_in_progress(workflow):
        return False
    last = ModelVersion.objects.filter(workflow=workflow).defer("model").order_by("-version").first()
    count = training_data.human_retired_count(workflow)
    seen = last.retired_seen if last is not None else 0
    return count >= cfg["min_train"] and count - seen >= cfg["retrain_every"]


def request_retraining(workflow: Workflow, user: Any = None, reason: str = "manual") -> None:
    """Queue a training run on the "ml" queue (logged in the workflow's audit log)."""
    from machine.tasks import train_workflow

    cache.set(heartbeat.training_key(workflow.pk), 1, heartbeat.TRAINING_QUEUED_SECONDS)
    log_admin_action(workflow, user, "retrain", {"reason": reason})
    transaction.on_commit(lambda: train_workflow.delay(workflow.pk, reason))


def check_retraining() -> list[int]:
    """The scheduled trigger: queue a pretraining run for every workflow whose machine needs one
    (``pretraining_due``), else a training run where its retirements call for one."""
    queued = []
    for workflow in Workflow.objects.filter(active=True).exclude(active_learning={}):
        try:
            pretrain = pretraining.pretraining_due(workflow)
            due = not pretrain and retraining_due(workflow)
        except ValueError as error:
            logger.error("workflow %s: invalid active_learning settings: %s", workflow.pk, error)
            continue
        if pretrain:
            pretraining.request_pretraining(workflow)
            queued.append(workflow.pk)
        elif due:
            request_retraining(workflow, reason="retirements")
            queued.append(workflow.pk)
    return queued
