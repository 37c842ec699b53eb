"""Serializers of the volunteer API: input shape checks only; the rules live in services."""

from __future__ import annotations

import json
from typing import Any

from django.core.files.storage import default_storage
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from classifications.models import Classification, Volunteer
from classifications.parsers import json_value_problem
from classifications.services import IDEMPOTENCY_KEY, MAX_METADATA_BYTES
from projects.models import Project, Workflow

MAX_BATCH = 50
MAX_ID = 2**63 - 1  # PostgreSQL bigint


class StorableJSONField(serializers.JSONField):
    """Any JSON that PostgreSQL's jsonb stores and every reader can read back: no NUL or unpaired
    surrogate characters, finite numbers of a sane size, bounded depth (see classifications.parsers).
    Rejected with a field error rather than cleaned: a volunteer's data is stored as sent or not at all."""

    def to_internal_value(self, data: Any) -> Any:
        value = super().to_internal_value(data)
        problem = json_value_problem(value)
        if problem is not None:
            raise serializers.ValidationError(problem)
        return value


# The schema of three fields states what the services accept (validation stays there): a list of
# task annotations (each checked against the workflow's tree), an object, and the key's format.
@extend_schema_field({"type": "array", "items": {"type": "object"},
                      "description": "one {task, value} per task answered, as docs/api.md describes"})
class AnnotationsField(StorableJSONField):
    pass


@extend_schema_field({"type": "object"})
class MetadataField(StorableJSONField):
    pass


@extend_schema_field({"type": "string", "pattern": IDEMPOTENCY_KEY.pattern, "minLength": 8, "maxLength": 64})
class IdempotencyKeyField(serializers.CharField):
    pass


class ClassificationInputSerializer(serializers.Serializer):
    workflow = serializers.IntegerField(min_value=1, max_value=MAX_ID)
    subject = serializers.IntegerField(min_value=1, max_value=MAX_ID)
    annotations = AnnotationsField()
    idempotency_key = IdempotencyKeyField(max_length=64, trim_whitespace=False)
    started_at = serializers.DateTimeField(required=False, allow_null=True)
    finished_at = serializers.DateTimeField(required=False, allow_null=True)
    metadata = MetadataField(required=False)

    def validate_metadata(self, value: Any) -> dict:
        if not isinstance(value, dict):
            raise serializers.ValidationError("metadata must be an object")
        if len(json.dumps(value)) > MAX_METADATA_BYTES:
            raise serializers.ValidationError(f"metadata is larger than {MAX_METADATA_BYTES} bytes")
        return value


class ClassificationBatchInputSerializer(serializers.Serializer):
    classifications = ClassificationInputSerializer(many=True, allow_empty=False, max_length=MAX_BATCH)


class GoldFeedbackSerializer(serializers.Serializer):
    answers = serializers.DictField()
    feedback = serializers.CharField()


class ClassificationResultSerializer(serializers.Serializer):
    id = serializers.IntegerField(source="classification.pk")
    idempotency_key = serializers.CharField(source="classification.idempotency_key")
    counts = serializers.BooleanField(source="classification.counts")
    already_seen = serializers.BooleanField(source="classification.already_seen")
    subject_retired = serializers.BooleanField(source="classification.subject_was_retired")
    gold = GoldFeedbackSerializer(allow_null=True)


class VolunteerClassificationSerializer(serializers.ModelSerializer):
    """A stored classification, for its volunteer's own history: never ``is_gold`` (which subjects
    are gold stays with the project's owners; a volunteer who knew could answer those with care)."""

    class Meta:
        model = Classification
        fields = [
            "id", "workflow", "subject", "volunteer", "annotations", "started_at", "finished_at", "created_at",
            "metadata", "idempotency_key", "counts", "already_seen", "subject_was_retired",
        ]


class OwnerClassificationSerializer(serializers.ModelSerializer):
    """A stored classification, for the project's owners: gold status included."""

    class Meta:
        model = Classification
        fields = [*VolunteerClassificationSerializer.Meta.fields, "is_gold"]


class SubjectImageSerializer(serializers.Serializer):
    url = serializers.SerializerMethodField()
    width = serializers.IntegerField()
    height = serializers.IntegerField()

    def get_url(self, image: dict) -> str:
        url = default_storage.url(image["name"])
        request = self.context.get("request")
        return request.build_absolute_uri(url) if request is not None else url


class QueuedSubjectSerializer(serializers.Serializer):
    """A subject as a volunteer sees it: images and public metadata, never gold answers."""

    id = serializers.IntegerField(source="subject_id")
    images = SubjectImageSerializer(many=True)
    metadata = serializers.DictField()
    retired = serializers.BooleanField()


class NextSubjectsSerializer(serializers.Serializer):
    subjects = QueuedSubjectSerializer(many=True)
    finished = serializers.BooleanField()


class WorkflowSummarySerializer(serializers.ModelSerializer):
    subject_count = serializers.IntegerField(read_only=True)
    retired_count = serializers.IntegerField(read_only=True)

    class Meta:
        model = Workflow
        fields = ["id", "name", "active", "subject_count", "retired_count"]


class ProjectSerializer(serializers.ModelSerializer):
    workflows = WorkflowSummarySerializer(many=True, source="listed_workflows")

    class Meta:
        model = Project
        fields = ["id", "slug", "title", "description", "attribution", "workflows"]


class WorkflowSerializer(serializers.ModelSerializer):
    project = serializers.SlugRelatedField(slug_field="slug", read_only=True)

    class Meta:
        model = Workflow
        fields = ["id", "name", "project", "tasks", "active", "gold_feedback_rate", "field_guide", "tutorial"]


class VolunteerSerializer(serializers.ModelSerializer):
    username = serializers.SerializerMethodField()
    is_anonymous = serializers.BooleanField(read_only=True)
    classification_count = serializers.SerializerMethodField()

    class Meta:
        model = Volunteer
        fields = ["id", "username", "is_anonymous", "classification_count"]

    def get_username(self, volunteer: Volunteer) -> str | None:
        return volunteer.user.get_username() if volunteer.user_id else None

    def get_classification_count(self, volunteer: Volunteer) -> int:
        return volunteer.classifications.count()


class OwnerSubjectSerializer(serializers.Serializer):
    """A subject as its project's owners see it, gold answers and queue state included."""

    id = serializers.IntegerField(source="subject_id")
    external_id = serializers.CharField(source="subject.external_id")
    metadata = serializers.DictField(source="subject.metadata")
    gold = serializers.JSONField(source="subject.gold")
    status = serializers.CharField()
    classification_count = serializers.IntegerField()
    retirement_reason = serializers.CharField()
    retired_at = serializers.DateTimeField(allow_null=True)  # null while active
    posterior = serializers.JSONField()
    priority = serializers.FloatField()
