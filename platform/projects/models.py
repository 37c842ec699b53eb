"""Data model of projects: Project, Workflow (and the history of its task trees, WorkflowVersion),
SubjectSet, Subject and its images, and the per-workflow state of each subject (counts, status,
retirement, priority in the queue)."""

from __future__ import annotations

import random
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone

from projects.task_tree import validate_task_tree


class Project(models.Model):
    slug = models.SlugField(unique=True)
    title = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    owners = models.ManyToManyField(settings.AUTH_USER_MODEL, related_name="owned_projects", blank=True)
    attribution = models.TextField(blank=True, help_text="Credit for the images and labels.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        # The scientist role: who may open the project builder (projects.authoring.grant_scientist).
        permissions = [("build_projects", "Can create projects and workflows in the project builder")]

    def __str__(self) -> str:
        return self.title


class Workflow(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="workflows")
    name = models.CharField(max_length=200)
    tasks = models.JSONField(help_text="Task tree: {first_task, tasks}; see docs/api.md.")
    active = models.BooleanField(default=True, help_text="Paused workflows serve no subjects.")
    retirement = models.JSONField(
        default=dict, blank=True,
        help_text='When a subject retires: {"scope": "workflow", "required": [...], "bar": 0.01 | {task: bar}, '
        '"min": 3, "budget": 40} or {"scope": "first_question", "policy": "min:3,posterior:0.99,max:40"}, '
        'plus "estimator" options; see aggregation/workflow.py.',
    )
    gold_feedback_rate = models.FloatField(
        default=1.0, help_text="Share of gold-standard subjects after which the volunteer is told the experts' answer.",
    )
    active_learning = models.JSONField(
        default=dict, blank=True,
        help_text='Machine in the loop: {"acquisition": "bald"|"entropy"|"disagreement"|"random", '
        '"exploration_share": 0.1, "machine_retirement": true, "machine_threshold": 0.99, '
        '"retrain_every": 50}; see platform/machine/.',
    )
    field_guide = models.JSONField(default=list, blank=True)
    tutorial = models.JSONField(default=list, blank=True)
    subject_sets = models.ManyToManyField("SubjectSet", related_name="workflows", blank=True)
    # Versions as Zooniverse numbers them (projects/versioning.py says when each moves): a new major
    # version of a launched workflow is a new workflow, linked to the one it replaces.
    version_major = models.PositiveIntegerField(default=1, help_text="Moves when what an answer means changes.")
    version_minor = models.PositiveIntegerField(default=0, help_text="Moves on help text, mark limits, mirror swaps.")
    previous_version = models.OneToOneField(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="next_version",
        help_text="The workflow whose tree this one replaced (its earlier major version).",
    )
    launched_at = models.DateTimeField(
        null=True, blank=True, help_text="First saved active: from then on volunteers may hold its tree.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.project.slug}/{self.name}"

    @property
    def version_text(self) -> str:
        return f"{self.version_major}.{self.version_minor}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        # Every path that turns a workflow on (the builder's launch, the admin's resume, the Django
        # admin, create_workflow) marks it launched: a structural tree change after that makes a new
        # version (projects.versioning), since a volunteer may be holding the tree.
        if self.active and self.launched_at is None:
            self.launched_at = timezone.now()
            update_fields = kwargs.get("update_fields")
            if update_fields is not None:
                kwargs["update_fields"] = {*update_fields, "launched_at"}
        super().save(*args, **kwargs)

    def clean(self) -> None:
        errors = validate_task_tree(self.tasks)
        if errors:
            raise ValidationError({"tasks": errors})
        from live.engine import validate_engine_config

        problems = validate_engine_config(self.retirement or {}, self.tasks)
        if problems:
            raise ValidationError({"retirement": problems})
        if not 0.0 <= self.gold_feedback_rate <= 1.0:
            raise ValidationError({"gold_feedback_rate": "must lie between 0 and 1"})


class WorkflowVersion(models.Model):
    """One saved task tree of a workflow, kept when it is replaced: what the volunteers of that time
    saw (a workflow's classifications all share its major version; see projects/versioning.py)."""

    class Change(models.TextChoices):
        CREATED = "created"
        MAJOR = "major"
        MINOR = "minor"

    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="versions")
    major = models.PositiveIntegerField()
    minor = models.PositiveIntegerField()
    tasks = models.JSONField()
    change = models.CharField(max_length=16, choices=Change.choices)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["workflow_id", "major", "minor"]
        constraints = [models.UniqueConstraint(fields=["workflow", "major", "minor"], name="unique_workflow_version")]

    def __str__(self) -> str:
        return f"workflow {self.workflow_id} version {self.major}.{self.minor}"


class SubjectSet(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="subject_sets")
    name = models.CharField(max_length=200)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [models.UniqueConstraint(fields=["project", "name"], name="unique_subject_set_name")]

    def __str__(self) -> str:
        return self.name


class Subject(models.Model):
    subject_set = models.ForeignKey(SubjectSet, on_delete=models.CASCADE, related_name="subjects")
    external_id = models.CharField(max_length=200, help_text="The id in the scientist's manifest.")
    metadata = models.JSONField(default=dict, blank=True, help_text="Shown to volunteers, except keys starting with '#' or '!'.")
    gold = models.JSONField(
        null=True, blank=True,
        help_text="Gold-standard answers by task key; never shown to a volunteer before they answer.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["subject_set", "external_id"], name="unique_subject_external_id"),
        ]

    def __str__(self) -> str:
        return self.external_id

    @property
    def public_metadata(self) -> dict:
        """Metadata for volunteers: Zooniverse's convention hides keys starting with # or !."""
        return {k: v for k, v in self.metadata.items() if not k.startswith(("#", "!"))}


def subject_image_path(instance: SubjectImage, filename: str) -> str:
    return f"subjects/{instance.subject.subject_set_id}/{filename}"


class SubjectImage(models.Model):
    subject = models.ForeignKey(Subject, on_delete=models.CASCADE, related_name="images")
    position = models.PositiveSmallIntegerField(default=0)
    file = models.ImageField(upload_to=subject_image_path)
    width = models.PositiveIntegerField(help_text="Pixels; boxes are checked against it.")
    height = models.PositiveIntegerField()

    class Meta:
        ordering = ["subject_id", "position"]
        constraints = [models.UniqueConstraint(fields=["subject", "position"], name="unique_image_position")]


def random_priority() -> float:
    """New subjects start in random order; active learning overwrites the priority later."""
    return random.random()


class SubjectWorkflowState(models.Model):
    """What a workflow knows about one of its subjects: counts, status, retirement, priority."""

    class Status(models.TextChoices):
        ACTIVE = "active"
        RETIRED = "retired"

    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="subject_states")
    subject = models.ForeignKey(Subject, on_delete=models.CASCADE, related_name="workflow_states")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    classification_count = models.PositiveIntegerField(default=0, help_text="Classifications that count.")
    priority = models.FloatField(default=random_priority, help_text="Higher is served first.")
    machine_score = models.FloatField(
        null=True, blank=True,
        help_text="The machine's acquisition term of the priority (its score's rank in (0, 1)); see docs/queue.md.",
    )
    is_gold = models.BooleanField(default=False)
    posterior = models.JSONField(null=True, blank=True, help_text="Latest aggregated posterior, by task.")
    retired_at = models.DateTimeField(null=True, blank=True)
    retirement_reason = models.CharField(max_length=64, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["workflow", "subject"], name="unique_workflow_subject")]
        indexes = [
            # The next-subjects query walks this index in priority order.
            models.Index(fields=["workflow", "status", "-priority", "subject"], name="queue_order"),
        ]

    def __str__(self) -> str:
        return f"{self.workflow_id}:{self.subject_id} {self.status}"


class AdminAction(models.Model):
    """Who changed what and when on a workflow (settings, pause/resume, retraining, promotions)."""

    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="admin_actions")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL)
    action = models.CharField(max_length=64)
    details = models.JSONField(default=dict, blank=True)
    at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-at"]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M} {self.user} {self.action} on workflow {self.workflow_id}"
