"""Training runs of the machine: when one is due, and what one does.

A run (``train_model_version``) makes a new ``ModelVersion``: it trains on the human-retired
subjects (``machine.training_data``), warm-started from the version serving (``partial_fit``, on all
of them, a random sample of ``max_train`` at most) or, for the first version, fine-tuned from the
pretrained trunk (``machine.pretraining``) where there is one; it is calibrated on gold and measured
(``machine.evaluation``), judged "trained" or not (``machine.gold_gate``), and compared with the
version serving, measured again now on the same subjects; if better it is promoted
(``machine.promotion``) and, still in this run, predicts every unretired subject
(``machine.prediction``). It beats throughout (``machine.heartbeat``).

A run is due every ``retrain_every`` new human retirements (``retraining_due``); the scheduled
trigger (``check_retraining``) asks for pretraining first where the machine needs it. A failed
version counts as having seen the retirements it started with, so a run that fails every time is
not retried at every beat.
"""

from __future__ import annotations

import logging
from typing import Any

from django.core.cache import cache
from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from machine import agents, evaluation, gold_gate, heartbeat, prediction, pretraining, promotion, training_data
from machine.config import machine_settings
from machine.models import ModelVersion
from machine.selectors import current_model, gold_line
from projects.models import Workflow
from projects.services import log_admin_action

logger = logging.getLogger(__name__)

State = ModelVersion.State


def train_model_version(workflow_id: int, reason: str = "manual", promote: bool = True) -> ModelVersion | None:
    """One training run: a new ModelVersion, warm-started from the one serving, evaluated on gold,
    and promoted if better (its predictions then enter the engine). None if too few retired subjects."""
    from ml import GalaxyClassifier

    workflow = Workflow.objects.get(pk=workflow_id)
    cfg = machine_settings(workflow)
    key, k = agents.first_question(workflow)
    labelled = training_data.training_set(workflow)
    (validation_ids, validation_soft), (ids, soft) = training_data.split_by_id(labelled, cfg["validation_share"])
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
            retired_seen=training_data.human_retired_count(workflow),
        )
    beat = heartbeat.heartbeat_every(version)
    try:
        heartbeat.heartbeat(version)  # from now on the key lapses within the limit if this worker is killed
        seed = cfg["seed"] + number
        if len(ids) > cfg["max_train"]:
            pick = training_data.sample_at_most(len(ids), cfg["max_train"], seed)
            ids, soft = [ids[i] for i in pick], soft[pick]
        warm = pretrained = None
        if parent is not None and parent.model:
            warm = agents.load_classifier(parent)
            if warm.heads != ((key, k),):
                warm = None  # the question changed: start again
        if warm is not None:
            classifier = warm
            images = training_data.load_images(ids, classifier.config.image_size)
            beat()
            run = classifier.partial_fit(images, {key: soft}, epochs=cfg["warm_epochs"], batch_size=cfg["batch_size"], seed=seed,
                                         min_steps=cfg["min_steps"], on_step=beat)
        else:
            pretrained = pretraining.pretrained_classifier(workflow, cfg, (key, k))
            classifier = pretrained or GalaxyClassifier([(key, k)], image_size=cfg["image_size"], seed=cfg["seed"])
            images = training_data.load_images(ids, classifier.config.image_size)
            beat()
            # From the pretrained trunk, the first version is a fine-tuning (partial_fit keeps its weights).
            first_fit = classifier.fit if pretrained is None else classifier.partial_fit
            run = first_fit(images, {key: soft}, epochs=cfg["epochs"], batch_size=cfg["batch_size"], seed=seed,
                            min_steps=cfg["min_steps"], on_step=beat)
        gold = training_data.gold_set(workflow)
        gold_probs = evaluation.calibrate_on_gold(classifier, gold, cfg)
        beat()
        measured = evaluation.evaluate(classifier, workflow, cfg, gold, validation, gold_probs=gold_probs, line=gold_line(version),
                                       on_batch=beat)
        losses = measured.pop(evaluation.COMPARISON_LOSSES, None)
        version.gold_predictions = {str(i): [float(x) for x in p] for i, p in zip(gold[0], gold_probs, strict=True)}
        version.metrics = measured | {
            "n_train": len(ids), "train_seconds": round(float(run.get("train_seconds", 0.0)), 3), "warm_start": warm is not None,
            "from_pretrained": pretrained is not None,
            "n_gold_calibration": (classifier.calibration.get(key) or {}).get("n", 0), "calibration": classifier.calibration.get(key),
        }
        version.model = classifier.to_bytes()
        trained, why = gold_gate.trained_criterion(version, cfg)
        version.metrics |= {"trained": trained, "trained_reason": why}
        per_answer = gold_gate.certified_answers(version, cfg)
        if trained and per_answer is not None:
            version.metrics["retire_answers"] = per_answer[0]
        version.state = State.TRAINED
        version.trained_at = timezone.now()
        serving = None
        if parent is not None and promote:
            serving_classifier = agents.load_classifier(parent)  # measured as the candidate is, cross-fitted on the same gold
            serving_gold_probs = evaluation.calibrate_on_gold(serving_classifier, gold, cfg)
            beat()
            serving = evaluation.evaluate(serving_classifier, workflow, cfg, gold, validation,
                                          gold_probs=serving_gold_probs, on_batch=beat) | {"trained": parent.is_trained}
            serving_losses = serving.pop(evaluation.COMPARISON_LOSSES, None)
            version.metrics["compared_with"] = {
                "version": parent.version, "accuracy": serving["accuracy"], "ece": serving["ece"],
                "comparison_accuracy": serving.get("comparison_accuracy"),
                "comparison_log_loss": serving.get("comparison_log_loss"),
            }
            if losses is not None and serving_losses is not None:
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
