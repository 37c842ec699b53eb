"""Django admin for the machine: its agents and model versions (promote, roll back, retrain)."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from machine import promotion, training
from machine.models import MachineAgent, ModelVersion


@admin.register(MachineAgent)
class MachineAgentAdmin(admin.ModelAdmin):
    list_display = ["workflow", "volunteer", "pretrained", "created_at"]
    readonly_fields = ["workflow", "volunteer", "pretraining", "created_at"]
    exclude = ["pretrained_model"]  # weights: nothing to read or edit by hand

    @admin.display(description="pretrained trunk")
    def pretrained(self, agent: MachineAgent) -> str:
        record = agent.pretraining or {}
        return f"{record.get('state', 'no')} ({record.get('n_images', 0)} images, {record.get('image_size', '-')} px)" if record else "no"


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    list_display = ["workflow", "version", "state", "accuracy", "ece", "trained", "created_at", "promoted_at"]
    list_filter = ["state", "workflow"]
    exclude = ["model"]
    readonly_fields = [
        "workflow", "version", "state", "parent", "reason", "metrics", "retired_seen", "error",
        "created_at", "heartbeat_at", "trained_at", "promoted_at", "promoted_by",
    ]
    actions = ["promote", "roll_back", "retrain"]

    @admin.display(description="gold accuracy")
    def accuracy(self, obj: ModelVersion) -> float | None:
        return obj.metrics.get("accuracy")

    @admin.display(description="ECE")
    def ece(self, obj: ModelVersion) -> float | None:
        return obj.metrics.get("ece")

    @admin.display(boolean=True)
    def trained(self, obj: ModelVersion) -> bool:
        return obj.is_trained

    @admin.action(description="Promote the selected version")
    def promote(self, request: HttpRequest, queryset: QuerySet[ModelVersion]) -> None:
        if queryset.count() != 1:
            self.message_user(request, "Select exactly one version to promote.", messages.ERROR)
            return
        try:
            promotion.promote_model_version(queryset.get(), user=request.user)
        except ValueError as error:
            self.message_user(request, str(error), messages.ERROR)

    @admin.action(description="Roll back the selected versions' workflows to their previous model")
    def roll_back(self, request: HttpRequest, queryset: QuerySet[ModelVersion]) -> None:
        for workflow in {v.workflow for v in queryset}:
            if promotion.roll_back(workflow, user=request.user) is None:
                self.message_user(request, f"{workflow}: no earlier promoted version", messages.WARNING)

    @admin.action(description="Retrain the selected versions' workflows now")
    def retrain(self, request: HttpRequest, queryset: QuerySet[ModelVersion]) -> None:
        for workflow in {v.workflow for v in queryset}:
            training.request_retraining(workflow, user=request.user, reason="manual")
