"""The machine's data: its agent (a Volunteer that is a CNN) and the versions of its model.

Why a ``MachineAgent`` row rather than a flag on ``Volunteer``: the machine is a volunteer to the
engine (its predictions are ordinary ``Classification`` rows in the exactly-once log, and the engine
learns its confusion matrix like anyone's, or one per level of its confidence: ``live.engine.MACHINE_AGENTS``),
but only this app knows it is a machine; one agent per workflow, kept across model versions, so the
engine's estimate of its skill accumulates.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone

from classifications.models import Volunteer
from projects.models import Workflow


class MachineAgent(models.Model):
    workflow = models.OneToOneField(Workflow, on_delete=models.CASCADE, related_name="machine_agent")
    volunteer = models.OneToOneField(Volunteer, on_delete=models.CASCADE, related_name="machine_agent")
    created_at = models.DateTimeField(auto_now_add=True)
    pretrained_model = models.BinaryField(
        null=True, blank=True,
        help_text="ml.GalaxyClassifier.to_bytes() of a trunk pretrained on the workflow's unlabelled images "
                  "(machine.pretraining.pretrain_machine): its first model version starts from it.",
    )
    pretraining = models.JSONField(
        default=dict, blank=True,
        help_text="The pretraining run: {state: running|done|failed, attempts, image_size, n_images, epochs, loss, train_seconds, error}.",
    )

    def __str__(self) -> str:
        return f"machine of workflow {self.workflow_id} (volunteer {self.volunteer_id})"


class ModelVersion(models.Model):
    """One training run of a workflow's CNN, its gold metrics, and whether it serves."""

    class State(models.TextChoices):
        TRAINING = "training"
        TRAINED = "trained"  # trained and evaluated, not (yet) promoted
        REJECTED = "rejected"  # not better than the version serving when it was evaluated
        PROMOTED = "promoted"  # serves, or served (the current one is the latest promoted)
        ROLLED_BACK = "rolled_back"
        FAILED = "failed"

    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="model_versions")
    version = models.PositiveIntegerField(help_text="1, 2, ... per workflow.")
    state = models.CharField(max_length=16, choices=State.choices, default=State.TRAINING)
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="children",
        help_text="The version it was warm-started from.",
    )
    reason = models.CharField(max_length=64, blank=True, help_text="What asked for it: retirements, manual, ...")
    metrics = models.JSONField(
        default=dict, blank=True,
        help_text="On the held-out gold set: accuracy, ece, confusion, n_train, n_gold_test, trained, ... (its first question's), "
                  "and questions: {question key: the same for that question, with its own trained}",
    )
    gold_predictions = models.JSONField(
        default=dict, blank=True,
        help_text="{gold subject id: probabilities} of its first question, out of fold (machine.evaluation.calibrate_on_gold): "
                  "its successors' retirement rule averages them with theirs.",
    )
    gold_predictions_by_question = models.JSONField(
        default=dict, blank=True,
        help_text="{question key: {gold subject id: probabilities}} of every question it answers, out of fold "
                  "(empty for versions from before the machine answered several questions: gold_predictions is their first question's).",
    )
    model = models.BinaryField(null=True, blank=True, help_text="ml.GalaxyClassifier.to_bytes()")
    retired_seen = models.PositiveIntegerField(default=0, help_text="Human-retired subjects when training started.")
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    heartbeat_at = models.DateTimeField(
        default=timezone.now,
        help_text="Its training run's last sign of life (machine.heartbeat.heartbeat): a version still training "
                  "whose run is silent longer than HEARTBEAT_LIMIT_SECONDS is marked failed, its worker lost.",
    )
    trained_at = models.DateTimeField(null=True, blank=True)
    promoted_at = models.DateTimeField(null=True, blank=True)
    promoted_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)

    class Meta:
        ordering = ["-version"]
        constraints = [models.UniqueConstraint(fields=["workflow", "version"], name="unique_model_version_number")]

    def __str__(self) -> str:
        return f"workflow {self.workflow_id} model v{self.version} ({self.state})"

    @property
    def is_trained(self) -> bool:
        """Whether this version met the "trained" criterion (see ``machine.gold_gate``) on any question."""
        return bool(self.metrics.get("trained"))

    def question_metrics(self, key: str | None) -> dict:
        """Its metrics for question ``key`` (``None``: the top level, its first question's). A version
        measured before the machine answered several questions holds its first question's at the top
        level and nothing for any other."""
        metrics = self.metrics or {}
        if key is None:
            return metrics
        questions = metrics.get("questions")
        if questions is not None:
            return questions.get(key) or {}
        return metrics if self.workflow_id is not None and key == self.workflow.tasks["first_task"] else {}

    def trusted_on(self, key: str | None) -> bool:
        """Whether it met the "trained" criterion on question ``key``: its answers to it count."""
        return bool(self.question_metrics(key).get("trained"))

    def retire_answers_on(self, key: str) -> list[int] | None:
        """``retire_answers`` for question ``key``."""
        if not self.trusted_on(key):
            return []
        answers = self.question_metrics(key).get("retire_answers")
        return None if answers is None else [int(a) for a in answers]

    @property
    def retire_answers(self) -> list[int] | None:
        """The answers it may retire with once trained (``machine.gold_gate.certified_answers``); ``None``:
        any answer (``retire_record`` "overall", or a version measured before records per answer)."""
        if not self.is_trained:
            return []
        answers = self.metrics.get("retire_answers")
        return None if answers is None else [int(a) for a in answers]
