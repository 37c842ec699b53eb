"""The machine's predictions: every unretired subject answered by the version serving, stored as the
machine agent's classifications, and the queue ranked by them.

- Predictions are ordinary ``Classification`` rows with ``metadata = {"model_version": N,
  "probabilities": [...] (the first question's), "question_probabilities": {question: [...]},
  "acquisition": score, "machine_retire": bool}``, so they go through the live loop's exactly-once
  application log like any vote, and ``rebuild_aggregation`` replays them. The engine learns the
  machine's confusion matrix per question (or one per level of its confidence:
  ``live.engine.MACHINE_AGENTS``) as it learns anyone's: from gold subjects (every version predicts
  every unretired subject, gold ones included, and gold answers teach skills whether or not they
  count) and, for counted answers, from the consensus and the refits.
- What a classification answers: like a volunteer, the machine follows its own answers down the tree
  (``machine.agents.answer_path``: the arms question only where it says "disk"), and on a non-gold
  subject gives its answers to the questions of that path it is trained on
  (``gold_gate.trusted_questions``): a question it is not good enough at stays with humans, its
  answer neither given nor counted. On a gold subject it gives every answer on its path, so that the
  engine learns its skill on a question before it is trusted there. A version trained on no question
  of a subject's path gives them all, uncounted (they move nothing).
- Counting: a subject gets at most one *counted* machine classification, the first one made by a
  version trained on a question of its path (the database's one-counted-per-volunteer constraint
  enforces it). Later versions' predictions of the same subject are stored with ``counts=False``:
  successive versions of one CNN are strongly correlated, and counting each would add the same
  evidence again and again. An untrained version's predictions never count (they only teach the
  engine its skill on gold).
- Machine retirement: a prediction asks to retire its subject (``machine_retire``) only if the
  version is trained, the workflow allows it, the subject is not gold, and for every question it
  answers there the answer is one the version may retire with (``retire_answers_on``) and the
  retirement rule holds with that question's threshold (``machine.gold_gate.sure_enough``, with the
  ``retirement_versions - 1`` versions promoted before it). The engine (``live.engine``) then
  retires the subject with reason ``"machine"`` if the subject's posterior, with every answer so far,
  agrees with each of the machine's answers and every other required task is settled; the live loop
  trusts the flag only from a machine agent.
- Ranking: the acquisition scores, over the tree, rank the queue for humans (``machine.priorities``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
from django.db import IntegrityError, transaction
from django.db.models import F

from classifications.models import Classification
from classifications.signals import classifications_stored
from live.engine import MACHINE_RETIRE_KEY, RISK_KEY
from machine import agents, gold_gate, priorities, training_data
from machine.config import machine_settings, question_settings
from machine.models import ModelVersion
from machine.selectors import ancestor_versions, current_model
from projects.models import SubjectWorkflowState
from similarity.queue import restore_sent_first

logger = logging.getLogger(__name__)


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
    heads = agents.machine_heads(workflow)
    first = heads[0][0]
    classifier = agents.load_classifier(version)
    agent = agents.machine_agent(workflow)
    trained = version.is_trained
    trusted = set(gold_gate.trusted_questions(version, heads))
    may_retire = trained and cfg["machine_retirement"]
    ancestors = ancestor_versions(version, cfg["retirement_versions"] - 1) if may_retire else []
    may_retire = may_retire and len(ancestors) == cfg["retirement_versions"] - 1  # too few versions yet: none
    retire_answers = {key: version.retire_answers_on(key) for key in trusted}  # None: any answer
    thresholds = {key: question_settings(cfg, key)["machine_threshold"] for key, _ in heads}
    required = None
    if agents.whole_workflow(workflow):
        from live.engine import engine_config

        required = engine_config(workflow.retirement or {}, workflow.tasks)["retirement"]["required"]
    reach_of = agents.reach_function(workflow) if required is not None else None
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
        images = training_data.load_images(ids, classifier.config.image_size)
        probs = classifier.predict_proba(images, tta=cfg["tta"])
        mc = None
        if cfg["acquisition"] == "bald":
            mc = classifier.mc_predict(images, cfg["mc_samples"], tta=cfg["tta"], seed=cfg["seed"] + version.version + start)
        human = {key: np.full((len(batch), k), 1.0 / k) for key, k in heads}
        weights = {key: np.zeros(len(batch)) for key, _ in heads}
        for i, (_, _, posterior) in enumerate(batch):
            for key, k in heads:
                p = (posterior or {}).get(key)
                if isinstance(p, list) and len(p) == k:
                    human[key][i] = p
            unseen = reach_of is not None and not (posterior or {}).get(RISK_KEY)  # else the engine's reach is stored
            machine_reach = reach_of({key: probs[key][i] for key, _ in heads}) if unseen else {}
            for key, w in priorities.question_weights(posterior, machine_reach, heads, required).items():
                weights[key][i] = w
        score = priorities.tree_scores(cfg["acquisition"], probs, mc, human, weights, rng)
        earlier: dict[int, dict[int, dict[str, list[float]]]] = {}
        if may_retire and ancestors:
            for subject_id, number, by_question, p in mine.filter(subject_id__in=ids, metadata__model_version__in=ancestors).values_list(
                "subject_id", "metadata__model_version", "metadata__question_probabilities", "metadata__probabilities"
            ):
                earlier.setdefault(subject_id, {})[number] = by_question or {first: p}  # stored before every question had its own
        rows, counted = [], []
        for i, ((subject_id, is_gold, _), s) in enumerate(zip(batch, score, strict=True)):
            p = {key: probs[key][i] for key, _ in heads}
            answers = {key: int(q.argmax()) for key, q in p.items()}
            # Like a volunteer, the machine answers the questions its own answers lead to; a subject's
            # answers count (once) only on the questions it is trained on; on gold, every answer teaches
            # the engine its skill there, counted or not.
            path = agents.answer_path(workflow, answers)
            vouched = [key for key in path if key in trusted]
            if is_gold or not vouched:
                given, counts = path, trained and subject_id not in counted_before and (is_gold or bool(vouched))
            else:
                given, counts = vouched, subject_id not in counted_before
            # It asks to retire only where it is sure of every question it vouches for (the engine
            # then wants every other required task settled: live.engine).
            retire = may_retire and not is_gold and bool(vouched) and all(
                (retire_answers[key] is None or answers[key] in retire_answers[key])
                and gold_gate.sure_enough(p[key], [(earlier.get(subject_id, {}).get(a) or {}).get(key) for a in ancestors], thresholds[key])
                for key in vouched)
            rows.append(Classification(
                workflow=workflow, subject_id=subject_id, volunteer=agent.volunteer,
                annotations=[{"task": key, "value": answers[key]} for key in given],
                metadata={"model_version": version.version, "probabilities": [float(x) for x in p[first]],
                          "question_probabilities": {key: [float(x) for x in q] for key, q in p.items()},
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
    explored = priorities.update_priorities(workflow, scores, cfg["exploration_share"], seed=cfg["seed"] + version.version)
    restore_sent_first(workflow)  # the subjects a scientist sent first keep their place (similarity.queue)
    report["explored"] = len(explored)
    logger.info("workflow %s: model v%s predicted %s", workflow.pk, version.version, report)
    return report
