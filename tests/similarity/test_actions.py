"""Acting on what the embeddings show: "send these first" moves the subjects to the head of the
volunteers' queue through the queue's priority, stays there through the live loop and the machine's
next ranking, and is logged; "new question from these" fits a head on labels (JSON or CSV, all or
nothing), measures it by cross-validation and exports every subject ranked."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest
from django.utils import timezone

from classifications.models import Volunteer
from classifications.selectors import next_subjects
from classifications.services import submit_classification
from live.services import apply_pending
from machine import prediction
from machine.models import ModelVersion
from projects.models import AdminAction, SubjectWorkflowState
from similarity import embeddings, questions, queue
from similarity.models import QuestionLabel, SentFirst
from tests.similarity.conftest import tiny_classifier

pytestmark = pytest.mark.django_db


def _served(workflow, count: int = 5) -> list[int]:
    subjects, _ = next_subjects(workflow, Volunteer.objects.create(), count)
    return [s.subject_id for s in subjects]


def _ids(workflow, gold: bool = False) -> list[int]:
    return list(SubjectWorkflowState.objects.filter(workflow=workflow, is_gold=gold).order_by("subject_id").values_list("subject_id", flat=True))


def test_sent_first_subjects_are_served_first_and_stay_first_until_retired(galaxy_workflow, scientist) -> None:
    workflow = galaxy_workflow()
    picks = _ids(workflow)[-3:]
    assert not set(_served(workflow)) >= set(picks)
    report = queue.send_first(workflow, picks, scientist)
    assert report == {"requested": 3, "queued": 3, "retired_or_gone": 0, "recorded": 3}
    assert set(_served(workflow, 3)) == set(picks)
    action = AdminAction.objects.get(workflow=workflow, action="send_first")
    assert action.user == scientist and action.details["subjects"] == picks and action.details["n_queued"] == 3
    # The live loop rewrites a subject's priority after each vote from its value and this term.
    volunteer = Volunteer.objects.create()
    submit_classification(volunteer, {"workflow": workflow.pk, "subject": picks[0], "annotations": [{"task": "T0", "value": 0}],
                                      "idempotency_key": "first-look"})
    apply_pending(workflow.pk)
    assert set(_served(workflow, 3)) == set(picks)
    others = SubjectWorkflowState.objects.filter(workflow=workflow).exclude(subject_id__in=picks)
    lowest_pick = min(SubjectWorkflowState.objects.filter(workflow=workflow, subject_id__in=picks).values_list("priority", flat=True))
    assert lowest_pick > max(others.values_list("priority", flat=True))


def test_the_machine_ranking_the_queue_again_keeps_the_picks_first(galaxy_workflow, scientist) -> None:
    workflow = galaxy_workflow()
    picks = _ids(workflow)[:2]
    queue.send_first(workflow, picks, scientist)
    version = ModelVersion.objects.create(workflow=workflow, version=1, state=ModelVersion.State.PROMOTED, promoted_at=timezone.now(),
                                          model=tiny_classifier().to_bytes(), metrics={"trained": False})
    prediction.predict_unretired(version.pk)  # scores every active subject and rewrites the machine's term
    states = SubjectWorkflowState.objects.filter(workflow=workflow, is_gold=False)
    assert states.exclude(subject_id__in=picks).filter(machine_score__isnull=False).count() > 0
    assert set(states.filter(subject_id__in=picks).values_list("machine_score", flat=True)) == {queue.SEND_FIRST_SCORE}
    assert set(_served(workflow, 2)) == set(picks)


def test_retired_and_foreign_subjects_and_withdrawal(galaxy_workflow, scientist) -> None:
    workflow, other = galaxy_workflow(), galaxy_workflow()
    ids = _ids(workflow)
    SubjectWorkflowState.objects.filter(workflow=workflow, subject_id=ids[0]).update(status="retired", retirement_reason="limit")
    report = queue.send_first(workflow, ids[:3], scientist)
    assert report["queued"] == 2 and report["retired_or_gone"] == 1
    with pytest.raises(ValueError, match="not in this workflow"):
        queue.send_first(workflow, [_ids(other)[0]], scientist)
    with pytest.raises(ValueError, match="at least one"):
        queue.send_first(workflow, [], scientist)
    assert queue.cancel_sent_first(workflow, [ids[1]], scientist) == 1
    assert SubjectWorkflowState.objects.get(workflow=workflow, subject_id=ids[1]).machine_score is None
    assert queue.sent_first_ids(workflow) == sorted(ids[:3:2])
    assert queue.cancel_sent_first(workflow, None, scientist) == 2 and not SentFirst.objects.filter(workflow=workflow).exists()
    assert AdminAction.objects.filter(workflow=workflow, action="cancel_send_first").count() == 2
    fresh = galaxy_workflow()
    assert SubjectWorkflowState.objects.filter(workflow=fresh, subject_id__in=_ids(fresh)).first().priority < 0.9


def _separable_labels(workflow) -> dict[int, int]:
    """A question the embeddings can answer: which side of the map's first axis a subject lies on."""
    from similarity.models import SubjectEmbedding

    space = embeddings.current_space(workflow)
    return {sid: int(x > 0) for sid, x in SubjectEmbedding.objects.filter(space=space).values_list("subject_id", "map_x")}


def test_a_new_question_is_learnt_from_labels_measured_and_ranked(embedded_workflow, scientist) -> None:
    workflow = embedded_workflow()
    question = questions.create_question(workflow, "left or right", ["left", "right"], scientist)
    truth = _separable_labels(workflow)
    labelled = sorted(truth)[:30]
    assert questions.set_labels(question, [(i, truth[i]) for i in labelled], scientist) == 30
    questions.fit_question(question, scientist)
    question.refresh_from_db()
    cv = question.metrics["cross_validation"]
    assert question.metrics["n_labels"] == 30 and cv["folds"] >= 2 and cv["accuracy"] >= 0.8
    rows = list(questions.ranking_rows(question))
    assert len(rows) == 40 and [r["rank"] for r in rows] == list(range(1, 41))
    p = [r["probability"] for r in rows]
    assert p == sorted(p, reverse=True) and all(r["probability"] == r["p.right"] for r in rows)
    assert all(abs(r["p.left"] + r["p.right"] - 1) < 1e-5 for r in rows)
    unseen = [r for r in rows if r["subject_id"] not in labelled]
    assert np.mean([truth[r["subject_id"]] == (r["predicted"] == "right") for r in unseen]) >= 0.8
    assert {r["label"] for r in rows if r["subject_id"] in labelled} <= {"left", "right"}
    assert [r["rank"] for r in questions.ranking_rows(question, answer=0)][:1] == [1]
    assert AdminAction.objects.filter(workflow=workflow, action__in=["new_question", "label_question", "fit_question"]).count() == 3


def test_labels_by_csv_and_bad_input_store_nothing(embedded_workflow, scientist) -> None:
    workflow = embedded_workflow()
    question = questions.create_question(workflow, "ring", ["no ring", "ring"], scientist)
    states = SubjectWorkflowState.objects.filter(workflow=workflow).select_related("subject").order_by("subject_id")[:4]
    text = "external_id,answer\n" + "".join(f"{s.subject.external_id},{'ring' if n % 2 else 0}\n" for n, s in enumerate(states))
    labels = questions.parse_label_csv(question, text)
    assert questions.set_labels(question, labels) == 4
    assert sorted(QuestionLabel.objects.filter(question=question).values_list("answer", flat=True)) == [0, 0, 1, 1]
    with pytest.raises(questions.QuestionError) as bad:
        questions.parse_label_csv(question, text + "nobody,ring\n" + f"{states[0].subject.external_id},maybe\n")
    assert bad.value.errors["file"] == ["line 6: no subject 'nobody' in this workflow", "line 7: 'maybe' is not an answer (no ring, ring)"]
    with pytest.raises(questions.QuestionError, match="header"):
        questions.parse_label_csv(question, "id,label\n1,0\n")
    with pytest.raises(questions.QuestionError, match="not in this workflow"):
        questions.set_labels(question, [(states[0].subject_id, 1), (10**9, 1)])
    assert QuestionLabel.objects.filter(question=question).count() == 4  # nothing of the refused batch
    questions.set_labels(question, [(states[0].subject_id, None)])  # None removes a label
    assert QuestionLabel.objects.filter(question=question).count() == 3
    with pytest.raises(questions.QuestionError, match="at least two subjects with each"):
        questions.fit_question(question)
    with pytest.raises(questions.QuestionError, match="already has"):
        questions.create_question(workflow, "ring", ["a", "b"])
    with pytest.raises(questions.QuestionError) as bad:
        questions.create_question(workflow, "", ["only"])
    assert set(bad.value.errors) == {"name", "answers"}


def test_a_ranking_csv_has_a_row_per_subject(embedded_workflow, scientist) -> None:
    workflow = embedded_workflow()
    question = questions.create_question(workflow, "side", ["a", "b"], scientist)
    truth = _separable_labels(workflow)
    questions.set_labels(question, list(truth.items())[:12])
    questions.fit_question(question)
    from dashboards import downloads

    text = "".join(downloads.csv_lines(questions.ranking_columns(question), questions.ranking_rows(question)))
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == 40 and list(rows[0]) == ["rank", "subject_id", "external_id", "status", "label", "predicted", "probability", "p.a", "p.b"]
