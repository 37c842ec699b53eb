"""Pretraining: before its first version, the CNN's trunk learns, self-supervised, from the images of
the workflow's non-gold subjects, and the first version is fine-tuned from it.

Why: a project has all its images before its first vote, while its first versions learn from a
few hundred retired subjects; a trunk pretrained on the images learns from those few better than
one from scratch (measured: ``bench/cnn_pretraining.py``, docs/machine.md, step 0). The run
(``pretrain_machine``, ``ml.pretrain``) happens once per machine and image size, on the "ml" queue,
holding the training key (``machine.heartbeat``) so that training waits for it; gold subjects stay
unseen in every way, since they measure the machine. A failed run is recorded and not retried (the
first version then starts from random weights); a run whose worker was lost is asked for again, up
to ``PRETRAINING_ATTEMPTS`` tries.
"""

from __future__ import annotations

import logging
from typing import Any

from django.core.cache import cache
from django.db import transaction

from machine import agents, heartbeat, training_data
from machine.config import machine_settings
from machine.models import MachineAgent, ModelVersion
from projects.models import SubjectImage, SubjectWorkflowState, Workflow
from projects.services import log_admin_action

logger = logging.getLogger(__name__)

# A pretraining run whose worker died (killed, out of memory) records nothing but "running"; the
# beat asks for it again once its key lapses. This many tries, then it is recorded as failed and the
# first version starts from random weights: a run that kills its worker every time (too many images
# for the worker's memory) would otherwise hold the machine's training back for good.
PRETRAINING_ATTEMPTS = 3


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
    return len(pretraining_subjects(workflow)) >= cfg["min_train"] and not heartbeat.training_in_progress(workflow)


def request_pretraining(workflow: Workflow, user: Any = None) -> None:
    """Queue the pretraining run on the "ml" queue; it holds the training key as a training run does
    (one run of a workflow's machine at a time), so training waits for it."""
    from machine.tasks import pretrain_workflow

    cache.set(heartbeat.training_key(workflow.pk), 1, heartbeat.TRAINING_QUEUED_SECONDS)
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
    heads = agents.machine_heads(workflow)
    agent = agents.machine_agent(workflow)
    ids = pretraining_subjects(workflow)
    if len(ids) > cfg["max_train"]:
        ids = [ids[i] for i in training_data.sample_at_most(len(ids), cfg["max_train"], cfg["seed"])]
    record: dict[str, Any] = {"image_size": cfg["image_size"], "n_images": len(ids), "epochs": cfg["pretrain_epochs"]}
    before = agent.pretraining or {}
    lost = before.get("attempts", 0) if before.get("state") == "running" and before.get("image_size") == cfg["image_size"] else 0
    if lost >= PRETRAINING_ATTEMPTS:
        agent.pretraining = record | {"state": "failed", "attempts": lost,
                                      "error": f"worker lost {lost} times (no heartbeat for {heartbeat.HEARTBEAT_LIMIT_SECONDS} s): not tried again"}
        agent.save(update_fields=["pretraining"])
        logger.warning("workflow %s: pretraining lost %s times; the first version starts from random weights", workflow_id, lost)
        return agent
    record["attempts"] = lost + 1
    agent.pretraining = record | {"state": "running"}
    agent.save(update_fields=["pretraining"])
    beat = heartbeat.every_heartbeat_seconds(lambda: heartbeat.keep_training_key(workflow_id))
    # With mirror swaps the contrastive views of an image are mirrored alike (ml.pretrain): the trunk
    # keeps what tells a clockwise spiral from an anticlockwise one.
    classifier = GalaxyClassifier(heads, image_size=cfg["image_size"], seed=cfg["seed"], mirror_swaps=agents.mirror_swaps(workflow, heads))
    try:
        images = training_data.load_images(ids, cfg["image_size"])
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


def pretrained_classifier(workflow: Workflow, cfg: dict, heads: agents.Heads) -> Any:
    """A copy of the machine's pretrained trunk (random heads) if it fits the workflow's questions,
    their mirror swaps and the image size now, else None."""
    from ml import GalaxyClassifier

    blob = MachineAgent.objects.filter(workflow=workflow).values_list("pretrained_model", flat=True).first()
    if not blob:
        return None
    classifier = GalaxyClassifier.from_bytes(bytes(blob))
    if not agents.fits(classifier, heads, agents.mirror_swaps(workflow, heads)) or classifier.config.image_size != cfg["image_size"]:
        return None
    return classifier
