"""Active learning: the machine's acquisition scores, and the humans' queue ranked by them.

Each unretired, non-gold subject's queue priority takes its rank by acquisition score, scaled into
(0, 1), as the machine's term (``bald``, ``entropy``, ``disagreement`` or ``random``); a random
``exploration_share`` of them get a uniform random priority instead, so every stretch of the queue
holds about that share of random subjects. The priority adds that term to the subject's value for
humans (docs/queue.md): the subject the CNN most wants labelled weighs as much as one bit of the
crowd's.
"""

from __future__ import annotations

import random
import time

import numpy as np
from django.db import OperationalError, connection

from projects.models import SubjectWorkflowState, Workflow


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
