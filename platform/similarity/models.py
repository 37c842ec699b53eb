"""The data of similarity search: one embedding space per model that embedded a workflow's subjects,
the subjects' vectors in it (pgvector), the subjects a scientist sent to volunteers first, and the
new questions learnt from a few labels on the embeddings.

Why a space per model: a vector only means something next to vectors of the same network, so each
promoted version (or, before the first, the pretrained trunk) gets its own space, and a search
never mixes two. The vectors of all spaces share one table; each space has its own partial HNSW
index (``WHERE space_id = N``, created when the space is built: ``similarity.embeddings``), so a
search walks only its space's graph and the column needs no fixed dimension.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from pgvector.django import VectorField

from machine.models import ModelVersion
from projects.models import Subject, Workflow


class EmbeddingSpace(models.Model):
    class State(models.TextChoices):
        BUILDING = "building"
        READY = "ready"
        FAILED = "failed"

    class Source(models.TextChoices):
        VERSION = "version"  # a promoted model version's CNN
        PRETRAINED = "pretrained"  # the machine's self-supervised trunk, before any version

    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="embedding_spaces")
    source = models.CharField(max_length=16, choices=Source.choices)
    model_version = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.CASCADE, related_name="embedding_spaces",
        help_text="The version whose CNN embedded the subjects (source 'version').",
    )
    model_digest = models.CharField(max_length=40, blank=True, help_text="SHA-1 of the weights that embedded them.")
    dimensions = models.PositiveIntegerField(default=0)
    image_size = models.PositiveIntegerField(default=0)
    state = models.CharField(max_length=16, choices=State.choices, default=State.BUILDING)
    n_subjects = models.PositiveIntegerField(default=0)
    anomaly_k = models.PositiveIntegerField(default=0, help_text="Anomaly score: cosine distance to the k-th nearest subject.")
    pca = models.JSONField(default=dict, blank=True, help_text="The 2-D map: {explained_variance: [..], axes ranges}.")
    timings = models.JSONField(default=dict, blank=True, help_text="Seconds spent embedding, storing, indexing.")
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    activated_at = models.DateTimeField(null=True, blank=True, help_text="When it became the space searched (built, or reused).")

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["workflow", "state", "-activated_at"], name="similarity_current_space")]

    def __str__(self) -> str:
        what = f"v{self.model_version.version}" if self.model_version_id else "pretrained trunk"
        return f"workflow {self.workflow_id} embeddings of {what} ({self.state})"

    @property
    def index_name(self) -> str:
        return f"similarity_space_{self.pk}_hnsw"


class SubjectEmbedding(models.Model):
    """One subject's L2-normalised embedding in one space, its anomaly score and its place on the map."""

    # No index of its own: the unique (space, subject) index leads with the space.
    space = models.ForeignKey(EmbeddingSpace, on_delete=models.CASCADE, related_name="embeddings", db_index=False)
    subject = models.ForeignKey(Subject, on_delete=models.CASCADE, related_name="embeddings")
    vector = VectorField()
    anomaly = models.FloatField(help_text="Cosine distance to its k-th nearest subject (higher: more unusual).")
    map_x = models.FloatField()
    map_y = models.FloatField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["space", "subject"], name="unique_space_subject")]
        indexes = [models.Index(fields=["space", "-anomaly"], name="similarity_anomaly_order")]


class SentFirst(models.Model):
    """A subject a scientist asked volunteers to see first (``similarity.queue``): kept so that the
    machine's re-ranking of the queue at its next version does not undo the request."""

    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="sent_first")
    subject = models.ForeignKey(Subject, on_delete=models.CASCADE, related_name="+")
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    requested_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["workflow", "subject"], name="unique_sent_first")]


class NewQuestion(models.Model):
    """A question the volunteers were never asked, learnt from a few hundred labels on the frozen
    embeddings (``similarity.questions``)."""

    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="new_questions")
    name = models.CharField(max_length=200)
    answers = models.JSONField(help_text="Answer labels, e.g. ['no ring', 'ring'].")
    space = models.ForeignKey(EmbeddingSpace, null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
                              help_text="The space its head was fitted in.")
    head = models.JSONField(null=True, blank=True, help_text="ml.embedding.LinearHead.to_dict()")
    metrics = models.JSONField(default=dict, blank=True, help_text="n_labels, per-answer counts, cross-validated accuracy.")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    fitted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [models.UniqueConstraint(fields=["workflow", "name"], name="unique_new_question_name")]

    def __str__(self) -> str:
        return f"{self.name} (workflow {self.workflow_id})"


class QuestionLabel(models.Model):
    question = models.ForeignKey(NewQuestion, on_delete=models.CASCADE, related_name="labels")
    subject = models.ForeignKey(Subject, on_delete=models.CASCADE, related_name="+")
    answer = models.PositiveSmallIntegerField()
    labelled_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["question", "subject"], name="unique_question_label")]
