"""The volunteer API (DRF): thin views over the services and selectors; see docs/api.md."""

from __future__ import annotations

import re

from django.db.models import Count, Prefetch, Q
from django.shortcuts import get_object_or_404
from django.utils.decorators import method_decorator
from django.views.decorators.csrf import ensure_csrf_cookie
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import generics, status
from rest_framework.exceptions import NotFound, PermissionDenied, Throttled, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from classifications import selectors, services
from classifications.serializers import (
    MAX_BATCH,
    ClassificationBatchInputSerializer,
    ClassificationInputSerializer,
    ClassificationResultSerializer,
    NextSubjectsSerializer,
    OwnerClassificationSerializer,
    OwnerSubjectSerializer,
    ProjectSerializer,
    VolunteerClassificationSerializer,
    VolunteerSerializer,
    WorkflowSerializer,
)
from projects.models import Project, SubjectWorkflowState, Workflow


def _volunteer(request: Request) -> services.Volunteer:
    try:
        volunteer = services.volunteer_for_request(request, create=True)
    except services.AnonymousVolunteerLimit as limit:  # an HTTP 429 with Retry-After; nothing written
        raise Throttled(limit.wait, detail=(
            "Too many new anonymous volunteers from this address. Keep the session cookie that "
            "GET /api/session/ sets (one volunteer per browser), or sign in.")) from None
    if volunteer is None:  # no session middleware: a misconfigured deployment
        raise PermissionDenied("no session or token")
    return volunteer


def _client_address(request: Request) -> str | None:
    """The client's address as the per-address throttles see it (``CHORUS_NUM_PROXIES``)."""
    from classifications.throttles import AddressRateThrottle

    return AddressRateThrottle().get_ident(request)


class SessionView(APIView):
    """Start or resume a volunteer session: sets the CSRF cookie, creates the anonymous volunteer."""

    @extend_schema(responses={200: inline_serializer("Session", {"volunteer": VolunteerSerializer()})})
    @method_decorator(ensure_csrf_cookie)
    def get(self, request: Request) -> Response:
        return Response({"volunteer": VolunteerSerializer(_volunteer(request)).data})


class ProjectListView(generics.ListAPIView):
    serializer_class = ProjectSerializer
    pagination_class = None

    def get_queryset(self):  # noqa: ANN201 - a QuerySet of Project
        workflows = Workflow.objects.filter(active=True).annotate(
            subject_count=Count("subject_states"),
            retired_count=Count("subject_states", filter=Q(subject_states__status=SubjectWorkflowState.Status.RETIRED)),
        )
        return Project.objects.prefetch_related(Prefetch("workflows", queryset=workflows, to_attr="listed_workflows"))


class WorkflowDetailView(generics.RetrieveAPIView):
    serializer_class = WorkflowSerializer
    queryset = Workflow.objects.select_related("project")


# What ``count`` and ``exclude`` accept, checked as the schema states them (a value the schema
# refuses is refused here too, not half-read by int()): ASCII digits; up to 200 ids and commas.
COUNT_PATTERN = r"[0-9]{1,3}"
EXCLUDE_PATTERN = r"^([0-9]{1,18}(,[0-9]{1,18}){0,199})?$"


class NextSubjectsView(APIView):
    @extend_schema(
        parameters=[
            OpenApiParameter("count", {"type": "integer", "minimum": 1, "maximum": selectors.MAX_NEXT_SUBJECTS},
                             description=f"1 to {selectors.MAX_NEXT_SUBJECTS} subjects (default 5)"),
            OpenApiParameter("exclude", {"type": "string", "pattern": EXCLUDE_PATTERN},
                             description="at most 200 comma-separated subject ids already queued"),
        ],
        responses={200: NextSubjectsSerializer},
    )
    def get(self, request: Request, pk: int) -> Response:
        workflow = services.cached_workflow(pk)
        if workflow is None:
            raise NotFound("unknown workflow")
        errors: dict[str, list[str]] = {}
        given_count = request.query_params.get("count", "5")
        count = int(given_count) if re.fullmatch(COUNT_PATTERN, given_count) else 0
        if not 1 <= count <= selectors.MAX_NEXT_SUBJECTS:
            errors["count"] = [f"an integer from 1 to {selectors.MAX_NEXT_SUBJECTS}"]
        given_exclude = request.query_params.get("exclude", "")
        exclude: set[int] = set()
        if re.fullmatch(EXCLUDE_PATTERN, given_exclude):
            exclude = {int(x) for x in given_exclude.split(",") if x}
        else:
            errors["exclude"] = ["at most 200 comma-separated subject ids"]
        if errors:
            return Response(errors, status=status.HTTP_400_BAD_REQUEST)
        if not workflow.active:
            return Response({"workflow": ["this workflow is paused"]}, status=status.HTTP_400_BAD_REQUEST)
        states, finished = selectors.next_subjects(workflow, _volunteer(request), count, exclude)
        body = {"subjects": states, "finished": finished}
        return Response(NextSubjectsSerializer(body, context={"request": request}).data)


class ClassificationCreateView(APIView):
    @extend_schema(request=ClassificationInputSerializer, responses={200: ClassificationResultSerializer, 201: ClassificationResultSerializer})
    def post(self, request: Request) -> Response:
        serializer = ClassificationInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        result = services.submit_classification(_volunteer(request), serializer.validated_data, _client_address(request))
        return Response(
            ClassificationResultSerializer(result).data, status=status.HTTP_201_CREATED if result.created else status.HTTP_200_OK
        )


class ClassificationBatchView(APIView):
    def throttle_cost(self, request: Request) -> int:
        """Throttles count the batch's classifications (an unreadable batch counts one: it is refused)."""
        items = request.data.get("classifications") if isinstance(request.data, dict) else None
        return min(max(len(items), 1), MAX_BATCH) if isinstance(items, list) else 1

    @extend_schema(request=ClassificationBatchInputSerializer,
                   responses={200: ClassificationResultSerializer(many=True), 201: ClassificationResultSerializer(many=True)})
    def post(self, request: Request) -> Response:
        serializer = ClassificationBatchInputSerializer(data=request.data)
        if not serializer.is_valid():
            raise ValidationError(_flat_batch_errors(serializer.errors))
        results = services.submit_classifications(_volunteer(request), serializer.validated_data["classifications"],
                                                  _client_address(request))
        any_created = any(result.created for result in results)
        return Response(
            ClassificationResultSerializer(results, many=True).data,
            status=status.HTTP_201_CREATED if any_created else status.HTTP_200_OK,
        )


def _flat_batch_errors(errors: dict) -> dict:
    """Item errors named as the services name them, ``classifications[2].metadata``, rather than DRF's
    nesting (a list, or an object keyed by index)."""
    items = errors.get("classifications")
    if isinstance(items, dict) and "non_field_errors" in items:  # not a list, too long, empty
        return {**errors, "classifications": items["non_field_errors"]}
    pairs = items.items() if isinstance(items, dict) else enumerate(items) if isinstance(items, list) else ()
    flat: dict = {}
    for index, item in pairs:
        if isinstance(item, dict):
            flat.update({f"classifications[{index}].{field}": messages for field, messages in item.items()})
    if not flat:
        return errors
    return {**{k: v for k, v in errors.items() if k != "classifications"}, **flat}


class MeView(APIView):
    @extend_schema(responses={200: OpenApiTypes.OBJECT})
    def get(self, request: Request) -> Response:
        volunteer = _volunteer(request)
        return Response({"volunteer": VolunteerSerializer(volunteer).data, "workflows": selectors.volunteer_counts(volunteer)})


class MyClassificationsView(generics.ListAPIView):
    serializer_class = VolunteerClassificationSerializer

    def get_queryset(self):  # noqa: ANN201 - a QuerySet of Classification
        return selectors.volunteer_history(_volunteer(self.request))


class OwnerOnlyMixin:
    """Project owners and staff read everything of their project; nobody else anything."""

    def check_owner(self, request: Request, project_id: int) -> None:
        if not Project.objects.filter(pk=project_id).exists():
            raise NotFound()
        if not selectors.is_project_owner(request.user, project_id):
            raise PermissionDenied("only the project's owners can read this")


class ProjectClassificationsView(OwnerOnlyMixin, generics.ListAPIView):
    serializer_class = OwnerClassificationSerializer

    def get_queryset(self):  # noqa: ANN201 - a QuerySet of Classification
        self.check_owner(self.request, self.kwargs["pk"])
        return selectors.project_classifications(self.kwargs["pk"])


class WorkflowSubjectsView(OwnerOnlyMixin, generics.ListAPIView):
    serializer_class = OwnerSubjectSerializer

    def get_queryset(self):  # noqa: ANN201 - a QuerySet of SubjectWorkflowState
        workflow = get_object_or_404(Workflow, pk=self.kwargs["pk"])
        self.check_owner(self.request, workflow.project_id)
        return SubjectWorkflowState.objects.filter(workflow=workflow).select_related("subject").order_by("subject_id")
