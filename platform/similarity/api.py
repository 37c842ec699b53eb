"""The scientists' similarity API (DRF), under /api/workflows/<id>/similarity/: thin views over
``similarity.selectors``, ``.embeddings``, ``.queue`` and ``.questions``; see docs/similarity.md.

Only the project's owners and staff may call it (``dashboards.permissions.can_manage``), signed in
(the pages) or with a token (scripts). Bad input is a 400 with field errors; a workflow without
embeddings yet is a 409 saying so.
"""

from __future__ import annotations

from typing import Any

from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.exceptions import NotAuthenticated, PermissionDenied
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from dashboards import downloads
from dashboards.permissions import can_manage
from projects.models import SubjectWorkflowState, Workflow
from similarity import embeddings, questions, queue, selectors
from similarity.models import NewQuestion


def _workflow(request: Request, pk: int) -> Workflow:
    workflow = get_object_or_404(Workflow.objects.select_related("project"), pk=pk)
    if not request.user.is_authenticated:
        raise NotAuthenticated("sign in, or send a token of the project's owner")
    if not can_manage(request.user, workflow):
        raise PermissionDenied("only the project's owners and staff may search its subjects")
    return workflow


def _ids(value: Any, field: str, errors: dict[str, list[str]], required: bool = True) -> list[int]:
    """Subject ids from "1,2,3" (a query string) or a JSON list of integers."""
    if value in (None, "", []):
        if required:
            errors[field] = ["give one or more subject ids"]
        return []
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list):
        errors[field] = ["a list of subject ids"]
        return []
    out = []
    for item in items:
        if isinstance(item, bool) or not (isinstance(item, int) or (isinstance(item, str) and item.strip().isdigit())):
            errors[field] = [f"{item!r} is not a subject id"]
            return []
        out.append(int(item))
    return out


def _int(value: Any, field: str, default: int, errors: dict[str, list[str]]) -> int:
    if value in (None, ""):
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        errors[field] = ["an integer"]
        return default


# The schema of these views (drf-spectacular cannot guess it from an APIView): query parameters as
# the views parse them, JSON objects in and out (their fields: docs/similarity.md), and the 409 of a
# workflow without embeddings. The errors every operation may answer are added by chorus.openapi.
_JSON = OpenApiResponse(OpenApiTypes.OBJECT, description="see docs/similarity.md")
_NOT_EMBEDDED = OpenApiResponse(OpenApiTypes.OBJECT, description="no embeddings yet for this workflow ({detail})")


def _query(name: str, kind: OpenApiTypes | dict, description: str, required: bool = False) -> OpenApiParameter:
    return OpenApiParameter(name, kind, OpenApiParameter.QUERY, description=description, required=required)


_IDS = "comma-separated subject ids"
_IDS_SCHEMA = {"type": "string", "pattern": r"^[0-9]{1,18}(,[0-9]{1,18})*$"}
_SUBJECT_IDS = {"type": "array", "items": {"type": "integer", "minimum": 1}, "minItems": 1}
_LABEL = {"type": "string", "minLength": 1, "pattern": r"\S"}


def _body(properties: dict, required: list[str]) -> dict:
    """A JSON object's schema."""
    return {"type": "object", "properties": properties, "required": required}


def _json(schema: dict) -> dict:
    """A request body of that schema (drf-spectacular reads a plain schema keyed by media type)."""
    return {"application/json": schema}


def _refused(error: Exception, field: str = "non_field_errors") -> Response:
    if isinstance(error, selectors.NotEmbedded):
        return Response({"detail": str(error)}, status=status.HTTP_409_CONFLICT)
    if isinstance(error, questions.QuestionError):
        return Response(error.errors, status=status.HTTP_400_BAD_REQUEST)
    return Response({field: [str(error)]}, status=status.HTTP_400_BAD_REQUEST)


class SpacesView(APIView):
    """GET: the workflow's embedding spaces (the current one flagged). POST: build again now."""

    @extend_schema(responses={200: _JSON})
    def get(self, request: Request, pk: int) -> Response:
        return Response({"spaces": selectors.spaces(_workflow(request, pk))})

    @extend_schema(request=None, responses={202: _JSON, 409: _NOT_EMBEDDED})
    def post(self, request: Request, pk: int) -> Response:
        workflow = _workflow(request, pk)
        if embeddings.embedding_source(workflow) is None:
            return Response({"detail": "nothing to embed with yet: no model version and no pretrained trunk"}, status=status.HTTP_409_CONFLICT)
        embeddings.request_build(workflow.pk)
        return Response({"queued": True}, status=status.HTTP_202_ACCEPTED)


class SimilarView(APIView):
    """GET ?subjects=1,2&count=20: the subjects nearest to the examples' mean."""

    @extend_schema(parameters=[_query("subjects", {**_IDS_SCHEMA, "maxLength": 19 * selectors.MAX_EXAMPLES},
                                      _IDS + f" (the examples, at most {selectors.MAX_EXAMPLES})", required=True),
                               _query("count", {"type": "integer", "minimum": 1, "maximum": selectors.MAX_RESULTS},
                                      f"1 to {selectors.MAX_RESULTS} (default 20)")],
                   responses={200: _JSON, 409: _NOT_EMBEDDED})
    def get(self, request: Request, pk: int) -> Response:
        workflow = _workflow(request, pk)
        errors: dict[str, list[str]] = {}
        ids = _ids(request.query_params.get("subjects"), "subjects", errors)
        count = _int(request.query_params.get("count"), "count", 20, errors)
        if not 1 <= count <= selectors.MAX_RESULTS:
            errors["count"] = [f"1 to {selectors.MAX_RESULTS}"]
        if errors:
            return Response(errors, status=status.HTTP_400_BAD_REQUEST)
        try:
            return Response(selectors.similar_subjects(workflow, ids, count))
        except (ValueError, selectors.NotEmbedded) as error:
            return _refused(error, "subjects")


class AnomaliesView(APIView):
    """GET ?count=40&offset=0&status=active: the most unusual subjects first."""

    @extend_schema(parameters=[_query("count", {"type": "integer", "minimum": 1, "maximum": selectors.MAX_RESULTS},
                                      f"1 to {selectors.MAX_RESULTS} (default 40)"),
                               _query("offset", {"type": "integer", "minimum": 0}, "from this rank (default 0)"),
                               _query("status", {"type": "string", "enum": ["", *SubjectWorkflowState.Status.values]},
                                      "only subjects in this state (default all)")],
                   responses={200: _JSON, 409: _NOT_EMBEDDED})
    def get(self, request: Request, pk: int) -> Response:
        workflow = _workflow(request, pk)
        errors: dict[str, list[str]] = {}
        count = _int(request.query_params.get("count"), "count", 40, errors)
        offset = _int(request.query_params.get("offset"), "offset", 0, errors)
        if errors:
            return Response(errors, status=status.HTTP_400_BAD_REQUEST)
        try:
            return Response(selectors.anomalies(workflow, count, offset, request.query_params.get("status") or None))
        except (ValueError, selectors.NotEmbedded) as error:
            return _refused(error)


class MapView(APIView):
    """GET ?question=T0&limit=5000&selected=1,2: the 2-D map's points."""

    @extend_schema(parameters=[_query("question", OpenApiTypes.STR, "colour the points by this question's answer (a key of the workflow's tree)"),
                               _query("limit", {"type": "integer", "minimum": 1, "maximum": 50000}, "at most this many points (default 5000)"),
                               _query("selected", _IDS_SCHEMA, _IDS + " to mark")],
                   responses={200: _JSON, 409: _NOT_EMBEDDED})
    def get(self, request: Request, pk: int) -> Response:
        workflow = _workflow(request, pk)
        errors: dict[str, list[str]] = {}
        limit = _int(request.query_params.get("limit"), "limit", 5000, errors)
        selected = _ids(request.query_params.get("selected"), "selected", errors, required=False)
        if errors:
            return Response(errors, status=status.HTTP_400_BAD_REQUEST)
        try:
            return Response(selectors.embedding_map(workflow, request.query_params.get("question") or None, limit, selected))
        except (ValueError, selectors.NotEmbedded) as error:
            return _refused(error)


class SendFirstView(APIView):
    """GET: the subjects sent first. POST {"subjects": [...]}: send them to volunteers first.
    DELETE {"subjects": [...]} (or no body: all): withdraw."""

    @extend_schema(responses={200: _JSON})
    def get(self, request: Request, pk: int) -> Response:
        return Response({"subjects": queue.sent_first_ids(_workflow(request, pk))})

    @extend_schema(request=_json(_body({"subjects": _SUBJECT_IDS}, ["subjects"])), responses={200: _JSON})
    def post(self, request: Request, pk: int) -> Response:
        workflow = _workflow(request, pk)
        errors: dict[str, list[str]] = {}
        ids = _ids(request.data.get("subjects") if isinstance(request.data, dict) else None, "subjects", errors)
        if errors:
            return Response(errors, status=status.HTTP_400_BAD_REQUEST)
        try:
            return Response(queue.send_first(workflow, ids, request.user))
        except ValueError as error:
            return _refused(error, "subjects")

    @extend_schema(request=_json(_body({"subjects": _SUBJECT_IDS}, [])), responses={200: _JSON})
    def delete(self, request: Request, pk: int) -> Response:
        workflow = _workflow(request, pk)
        errors: dict[str, list[str]] = {}
        given = request.data.get("subjects") if isinstance(request.data, dict) else None
        ids = _ids(given, "subjects", errors, required=False) if given is not None else None
        if errors:
            return Response(errors, status=status.HTTP_400_BAD_REQUEST)
        return Response({"withdrawn": queue.cancel_sent_first(workflow, ids, request.user)})


class QuestionsView(APIView):
    """GET: the workflow's new questions. POST {"name": ..., "answers": [...]}: a new one."""

    @extend_schema(responses={200: _JSON})
    def get(self, request: Request, pk: int) -> Response:
        workflow = _workflow(request, pk)
        return Response({"questions": [questions.question_summary(q) for q in NewQuestion.objects.filter(workflow=workflow)]})

    @extend_schema(request=_json(_body({"name": {**_LABEL, "maxLength": 200},
                                        "answers": {"type": "array", "items": {**_LABEL, "maxLength": 100}, "minItems": 2,
                                                    "maxItems": questions.MAX_ANSWERS, "uniqueItems": True}}, ["name", "answers"])),
                   responses={201: _JSON})
    def post(self, request: Request, pk: int) -> Response:
        workflow = _workflow(request, pk)
        data = request.data if isinstance(request.data, dict) else {}
        try:
            question = questions.create_question(workflow, data.get("name"), data.get("answers"), request.user)
        except questions.QuestionError as error:
            return _refused(error)
        return Response(questions.question_summary(question), status=status.HTTP_201_CREATED)


def _question(request: Request, pk: int, question_id: int) -> NewQuestion:
    workflow = _workflow(request, pk)
    return get_object_or_404(NewQuestion.objects.select_related("workflow"), pk=question_id, workflow=workflow)


class QuestionView(APIView):
    """GET: one new question, its labels and its head's accuracy."""

    @extend_schema(responses={200: _JSON}, operation_id="workflows_similarity_question_retrieve")
    def get(self, request: Request, pk: int, question_id: int) -> Response:
        return Response(questions.question_summary(_question(request, pk, question_id)))


class QuestionLabelsView(APIView):
    """POST {"labels": [{"subject": id, "answer": index or label or null}, ...]} or {"csv": "external_id,answer\\n..."}."""

    @extend_schema(request=_json({"oneOf": [
        _body({"labels": {"type": "array", "minItems": 1, "items": _body({"subject": {"type": "integer", "minimum": 1}, "answer": {}}, ["subject"])}},
              ["labels"]),
        _body({"csv": {"type": "string", "minLength": 1}}, ["csv"])]}), responses={200: _JSON})
    def post(self, request: Request, pk: int, question_id: int) -> Response:
        question = _question(request, pk, question_id)
        data = request.data if isinstance(request.data, dict) else {}
        try:
            if isinstance(data.get("csv"), str):
                labels = questions.parse_label_csv(question, data["csv"])
            elif isinstance(data.get("labels"), list):
                labels = []
                for n, item in enumerate(data["labels"]):
                    subject = item.get("subject") if isinstance(item, dict) else None
                    if isinstance(subject, bool) or not isinstance(subject, int):
                        raise questions.QuestionError({"labels": [f"item {n + 1}: give {{'subject': id, 'answer': ...}}"]})
                    labels.append((subject, item.get("answer")))
            else:
                raise questions.QuestionError({"labels": ["give labels: a list of {subject, answer}, or csv"]})
            n = questions.set_labels(question, labels, request.user)
        except questions.QuestionError as error:
            return _refused(error)
        return Response({"labelled": n, **questions.question_summary(question)})


class QuestionFitView(APIView):
    """POST: fit the head on the labels in the current space; returns its cross-validated accuracy."""

    @extend_schema(request=None, responses={200: _JSON, 409: _NOT_EMBEDDED})
    def post(self, request: Request, pk: int, question_id: int) -> Response:
        question = _question(request, pk, question_id)
        try:
            questions.fit_question(question, request.user)
        except (questions.QuestionError, selectors.NotEmbedded) as error:
            return _refused(error)
        return Response(questions.question_summary(question))


class QuestionRankingView(APIView):
    """GET ?answer=N: every subject ranked by the probability of answer N (default the last), as CSV."""

    @extend_schema(parameters=[_query("answer", OpenApiTypes.INT, "rank by this answer's probability (default the last)")],
                   responses={(200, "text/csv"): OpenApiResponse(OpenApiTypes.STR, description="one row per subject, best first")})
    def get(self, request: Request, pk: int, question_id: int) -> Any:
        question = _question(request, pk, question_id)
        errors: dict[str, list[str]] = {}
        answer = _int(request.query_params.get("answer"), "answer", len(question.answers) - 1, errors)
        if errors:
            return Response(errors, status=status.HTTP_400_BAD_REQUEST)
        try:
            rows = list(questions.ranking_rows(question, answer))
        except questions.QuestionError as error:
            return _refused(error)
        name = f"{question.workflow.project.slug}-workflow{question.workflow_id}-question{question.pk}-ranking.csv"
        return downloads.streamed(downloads.csv_lines(questions.ranking_columns(question), rows), name, "text/csv; charset=utf-8")
