"""Active learning: the machine's acquisition scores, and the humans' queue ranked by them.

A subject's acquisition score is, over the tree (``tree_scores``), the sum over the questions the
machine answers that are required and not settled yet of the question's reach times its head's
score (``bald``, ``entropy``, ``disagreement``; ``random`` is one draw per subject): what one more
human classification would teach the CNN about the questions that still hold the subject back, each
weighed by how likely a volunteer is to reach it (a spiral-arms head the CNN is unsure of matters
little on a galaxy that is surely smooth). The reach and whether a question is settled are the
engine's (the subject's stored ``"@risk"``); for a subject nobody has classified, every required
question is unsettled and the reach is the CNN's own (the product of its answer probabilities along
the path). Under the first-question rule it is the first question's score alone.

Each unretired, non-gold subject's queue priority takes its rank by acquisition score, scaled into
(0, 1), as the machine's term; a random
``exploration_share`` of them get a uniform random priority instead, so every stretch of the queue
holds about that share of random subjects. The priority adds that term to the subject's value for
humans (docs/queue.md): the subject the CNN most wants labelled weighs as much as one bit of the
crowd's.
"""

from __future__ import annotations

import random
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from django.db import OperationalError, connection

from live.engine import RISK_KEY
from projects.models import SubjectWorkflowState, Workflow


def acquisition_scores(
    method: str, probs: np.ndarray, mc_samples: np.ndarray | None, human: np.ndarray | None, rng: np.random.Generator
) -> np.ndarray:
    """One head's scores ``(N,)``."""
    from ml import acquisition

    if method == "bald":
        return acquisition.bald(mc_samples)
    if method == "entropy":
        return acquisition.entropy(probs)
    if method == "disagreement":
        return acquisition.disagreement(probs, human)
    return rng.random(probs.shape[0])


def tree_scores(
    method: str, probs: Mapping[str, np.ndarray], mc_samples: Mapping[str, np.ndarray] | None, human: Mapping[str, np.ndarray],
    weights: Mapping[str, np.ndarray], rng: np.random.Generator,
) -> np.ndarray:
    """Scores ``(N,)`` over the tree: ``sum_q weights[q] * score_q`` over the heads (``weights[q]``:
    ``(N,)``, the question's reach where it is required and unsettled, else 0; see the module)."""
    first = next(iter(probs))
    if method == "random":
        return rng.random(probs[first].shape[0])
    total = np.zeros(probs[first].shape[0])
    for key in probs:
        if np.any(weights[key]):
            total += weights[key] * acquisition_scores(method, probs[key], None if mc_samples is None else mc_samples[key], human[key], rng)
    return total


def question_weights(posterior: Mapping[str, Any] | None, machine_reach: Mapping[str, float], heads: Sequence[tuple[str, int]],
                     required: Sequence[str] | None) -> dict[str, float]:
    """One subject's weight of each head in ``tree_scores``: the engine's reach of the question where
    it is required and unsettled (the subject's stored ``"@risk"``), else 0; ``required`` None: the
    first-question rule (the first head, weight 1). A subject with no stored risk of a question (nobody
    classified it) has it unsettled if required, at the CNN's reach (``machine_reach``)."""
    if required is None:
        return {key: float(i == 0) for i, (key, _) in enumerate(heads)}
    risks = (posterior or {}).get(RISK_KEY) or {}
    out = {}
    for key, _ in heads:
        risk = risks.get(key)
        if risk is None:
            out[key] = float(machine_reach.get(key, 1.0)) if key in required else 0.0
        else:
            out[key] = 0.0 if risk.get("settled", True) else float(risk.get("reach", 1.0))
    return out


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
