""""New question from these": a question the volunteers were never asked (rings, say), learnt from a
few hundred labels on the frozen embeddings, then answered for every subject and exported as a
ranked list.

The labels come from the scientist (the galleries' "label as", the API, or a CSV of
``external_id,answer``), never from volunteers. The head is ``ml.embedding.LinearHead``, a softmax
regression on the current space's standardised embeddings: seconds on a CPU for hundreds of labels,
so it is fitted in the request; the CNN is not retrained. Its accuracy is estimated out of sample
by stratified k-fold cross-validation on the labels (k = 5, fewer when an answer has fewer labels),
since the labels are all there is to measure it on. A head is tied to the space it was fitted in:
after a promotion it is fitted again on the new embeddings (``fit_question``, or the page's button).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from django.db import transaction
from django.utils import timezone

from projects.models import Subject, SubjectWorkflowState, Workflow
from projects.services import log_admin_action
from similarity.embeddings import current_space, register_vectors
from similarity.models import EmbeddingSpace, NewQuestion, QuestionLabel, SubjectEmbedding
from similarity.selectors import NotEmbedded

MAX_ANSWERS = 10
FOLDS = 5
L2 = 10.0  # the LinearHead penalty; on the ring galaxies' embeddings it did best at 100 labels (bench/similarity_rings.py)


class QuestionError(ValueError):
    """Bad input, with field errors: ``{field: [messages]}``."""

    def __init__(self, errors: dict[str, list[str]]) -> None:
        super().__init__("; ".join(f"{k}: {' '.join(v)}" for k, v in errors.items()))
        self.errors = errors


def create_question(workflow: Workflow, name: Any, answers: Any, user: Any = None) -> NewQuestion:
    errors: dict[str, list[str]] = {}
    name = name.strip() if isinstance(name, str) else ""
    if not name or len(name) > 200:
        errors["name"] = ["a name of 1 to 200 characters"]
    elif NewQuestion.objects.filter(workflow=workflow, name=name).exists():
        errors["name"] = [f"this workflow already has a question named {name!r}"]
    if (not isinstance(answers, list) or not 2 <= len(answers) <= MAX_ANSWERS
            or not all(isinstance(a, str) and a.strip() and len(a) <= 100 for a in answers)):
        errors["answers"] = [f"a list of 2 to {MAX_ANSWERS} answer labels (each 1 to 100 characters)"]
    elif len({a.strip() for a in answers}) != len(answers):
        errors["answers"] = ["answer labels must differ"]
    if errors:
        raise QuestionError(errors)
    question = NewQuestion.objects.create(workflow=workflow, name=name, answers=[a.strip() for a in answers],
                                          created_by=user if getattr(user, "is_authenticated", False) else None)
    log_admin_action(workflow, user, "new_question", {"question": question.pk, "name": name, "answers": question.answers})
    return question


def _answer_index(question: NewQuestion, value: Any) -> int | None:
    """An answer given as its index (int or digits) or as its label."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if 0 <= value < len(question.answers) else None
    if isinstance(value, str):
        text = value.strip()
        if text in question.answers:
            return question.answers.index(text)
        if text.isdigit() and int(text) < len(question.answers):
            return int(text)
    return None


def set_labels(question: NewQuestion, labels: Sequence[tuple[int, Any]], user: Any = None) -> int:
    """Label subjects ``[(subject id, answer index or label), ...]`` (a later label of a subject
    replaces its earlier one; an answer of None removes it). All or nothing: a subject outside the
    workflow or an unknown answer is a ``QuestionError`` naming the item, and nothing is stored."""
    rows: dict[int, int | None] = {}
    problems = []
    for n, (subject_id, answer) in enumerate(labels):
        index = None if answer is None else _answer_index(question, answer)
        if answer is not None and index is None:
            problems.append(f"item {n + 1}: {answer!r} is not an answer ({', '.join(question.answers)})")
            continue
        rows[int(subject_id)] = index
    known = set(SubjectWorkflowState.objects.filter(workflow=question.workflow_id, subject_id__in=list(rows)).values_list("subject_id", flat=True))
    problems += [f"subject {i} is not in this workflow" for i in rows if i not in known][:20]
    if problems:
        raise QuestionError({"labels": problems[:20]})
    with transaction.atomic():
        QuestionLabel.objects.filter(question=question, subject_id__in=[i for i, a in rows.items() if a is None]).delete()
        QuestionLabel.objects.bulk_create(
            [QuestionLabel(question=question, subject_id=i, answer=a) for i, a in rows.items() if a is not None],
            update_conflicts=True, unique_fields=["question", "subject"], update_fields=["answer", "labelled_at"],
        )
        log_admin_action(question.workflow, user, "label_question", {"question": question.pk, "n_labels": len(rows)})
    return len(rows)


def parse_label_csv(question: NewQuestion, text: str) -> list[tuple[int, Any]]:
    """``(subject id, answer)`` from a CSV with a header: ``external_id`` (or ``subject_id``) and
    ``answer`` (its index or label). A bad line is a ``QuestionError`` naming its line number."""
    reader = csv.DictReader(io.StringIO(text))
    columns = set(reader.fieldnames or [])
    key = "external_id" if "external_id" in columns else "subject_id" if "subject_id" in columns else None
    if key is None or "answer" not in columns:
        raise QuestionError({"file": ["the header must name external_id (or subject_id) and answer"]})
    raw = [(line, row) for line, row in enumerate(reader, start=2)]
    ids: dict[str, int] = {}
    if key == "external_id":
        subjects = Subject.objects.filter(workflow_states__workflow_id=question.workflow_id,
                                          external_id__in=[(r.get(key) or "").strip() for _, r in raw])
        ids = dict(subjects.values_list("external_id", "id"))
    out, problems = [], []
    for line, row in raw:
        value = (row.get(key) or "").strip()
        subject_id = ids.get(value) if key == "external_id" else (int(value) if value.isdigit() else None)
        if subject_id is None:
            problems.append(f"line {line}: no subject {value!r} in this workflow")
        elif _answer_index(question, row.get("answer")) is None:
            problems.append(f"line {line}: {row.get('answer')!r} is not an answer ({', '.join(question.answers)})")
        else:
            out.append((subject_id, row["answer"]))
    if problems:
        raise QuestionError({"file": problems[:20]})
    if not out:
        raise QuestionError({"file": ["no labels in the file"]})
    return out


def space_vectors(space: EmbeddingSpace, subject_ids: Sequence[int] | None = None) -> tuple[list[int], np.ndarray]:
    """The space's subject ids (ascending) and their vectors ``(N, D)``, or those of ``subject_ids``."""
    register_vectors()
    rows = SubjectEmbedding.objects.filter(space=space)
    if subject_ids is not None:
        rows = rows.filter(subject_id__in=list(subject_ids))
    pairs = list(rows.order_by("subject_id").values_list("subject_id", "vector"))
    vectors = np.asarray([v for _, v in pairs], dtype=np.float32).reshape(len(pairs), space.dimensions)
    return [i for i, _ in pairs], vectors


def stratified_folds(labels: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """Fold numbers ``(N,)``: each answer's labels dealt round-robin over ``k`` folds in random order."""
    rng = np.random.default_rng(seed)
    folds = np.empty(len(labels), dtype=np.int64)
    for answer in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == answer))
        folds[idx] = np.arange(len(idx)) % k
    return folds


def cross_validate(vectors: np.ndarray, labels: np.ndarray, n_answers: int, folds: int = FOLDS, l2: float = L2) -> dict[str, Any]:
    """Out-of-fold accuracy of ``LinearHead`` on these labels (k lowered to the rarest answer's count)."""
    from ml.embedding import LinearHead

    k = min(folds, int(np.bincount(labels, minlength=n_answers)[np.unique(labels)].min()))
    if k < 2:
        return {"folds": 0, "accuracy": None}
    fold = stratified_folds(labels, k)
    predicted = np.empty(len(labels), dtype=np.int64)
    for f in range(k):
        held = fold == f
        head = LinearHead.fit(vectors[~held], labels[~held], n_answers, l2=l2)
        predicted[held] = head.predict_proba(vectors[held]).argmax(axis=1)
    right = predicted == labels
    recall = {int(a): float(right[labels == a].mean()) for a in np.unique(labels)}
    return {"folds": k, "accuracy": float(right.mean()), "standard_error": float(right.std(ddof=1) / np.sqrt(len(right))),
            "recall": recall}


def fit_question(question: NewQuestion, user: Any = None) -> NewQuestion:
    """Fit the question's head on its labels in the current space (logged); raises ``QuestionError``
    when there are too few labels (at least two answers, two labels each) and ``NotEmbedded``
    without a space."""
    from ml.embedding import LinearHead

    space = current_space(question.workflow_id)
    if space is None:
        raise NotEmbedded("no embeddings yet: they are built when a model version is promoted (or a trunk pretrained)")
    labelled = dict(QuestionLabel.objects.filter(question=question).values_list("subject_id", "answer"))
    ids, vectors = space_vectors(space, list(labelled))
    y = np.asarray([labelled[i] for i in ids], dtype=np.int64)
    counts = np.bincount(y, minlength=len(question.answers)) if len(y) else np.zeros(len(question.answers), dtype=int)
    if (counts >= 2).sum() < 2:
        raise QuestionError({"labels": [f"label at least two subjects with each of two answers (now: {dict(zip(question.answers, counts.tolist(), strict=True))})"]})
    head = LinearHead.fit(vectors, y, len(question.answers), l2=L2)
    question.space = space
    question.head = head.to_dict()
    question.metrics = {"n_labels": int(len(y)), "not_embedded": len(labelled) - len(ids),
                        "counts": dict(zip(question.answers, counts.tolist(), strict=True)),
                        "cross_validation": cross_validate(vectors, y, len(question.answers)), "space": space.pk}
    question.fitted_at = timezone.now()
    question.save(update_fields=["space", "head", "metrics", "fitted_at"])
    log_admin_action(question.workflow, user, "fit_question", {"question": question.pk, "n_labels": int(len(y)),
                                                                "accuracy": question.metrics["cross_validation"]["accuracy"]})
    return question


def predictions(question: NewQuestion) -> tuple[list[int], np.ndarray]:
    """Every subject of the head's space and its answer probabilities ``(N, K)``."""
    from ml.embedding import LinearHead

    if not question.head or question.space_id is None:
        raise QuestionError({"question": ["fit the question first"]})
    ids, vectors = space_vectors(question.space)
    return ids, LinearHead.from_dict(question.head).predict_proba(vectors)


RANKING_COLUMNS = ["rank", "subject_id", "external_id", "status", "label", "predicted", "probability"]


def ranking_rows(question: NewQuestion, answer: int | None = None) -> Iterator[dict[str, Any]]:
    """Every subject, most probably ``answer`` first (default: the last answer, e.g. "ring"): its
    rank, ids, status, the scientist's label if any, the predicted answer, and each answer's
    probability (``p.<answer>``)."""
    answer = len(question.answers) - 1 if answer is None else answer
    if not 0 <= answer < len(question.answers):
        raise QuestionError({"answer": [f"an answer index 0 to {len(question.answers) - 1}"]})
    ids, probs = predictions(question)
    order = np.lexsort((np.asarray(ids), -probs[:, answer]))
    labels = dict(QuestionLabel.objects.filter(question=question).values_list("subject_id", "answer"))
    states = dict(SubjectWorkflowState.objects.filter(workflow=question.workflow_id).values_list("subject_id", "status"))
    external = dict(Subject.objects.filter(pk__in=ids).values_list("id", "external_id"))
    for rank, i in enumerate(order, start=1):
        sid = ids[i]
        yield {"rank": rank, "subject_id": sid, "external_id": external.get(sid), "status": states.get(sid),
               "label": question.answers[labels[sid]] if sid in labels else "", "predicted": question.answers[int(probs[i].argmax())],
               "probability": round(float(probs[i, answer]), 6),
               **{f"p.{a}": round(float(probs[i, n]), 6) for n, a in enumerate(question.answers)}}


def ranking_columns(question: NewQuestion) -> list[str]:
    return RANKING_COLUMNS + [f"p.{a}" for a in question.answers]


def question_summary(question: NewQuestion) -> dict[str, Any]:
    labels = dict(QuestionLabel.objects.filter(question=question).values_list("subject_id", "answer"))
    return {"id": question.pk, "name": question.name, "answers": question.answers, "n_labels": len(labels),
            "labels": {str(k): v for k, v in labels.items()}, "metrics": question.metrics,
            "fitted_at": question.fitted_at.isoformat() if question.fitted_at else None, "space": question.space_id,
            "stale": question.space_id is not None and question.space_id != getattr(current_space(question.workflow_id), "pk", None)}
