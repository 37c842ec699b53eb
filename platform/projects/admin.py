"""Django admin for projects, workflows (their trees judged as the builder judges them) and their versions,
subject sets, subjects and their per-workflow state."""

from django import forms
from django.contrib import admin
from django.core.exceptions import ValidationError
from django.http import HttpRequest

from projects.errors import InputRejected
from projects.models import (
    AdminAction,
    Project,
    Subject,
    SubjectImage,
    SubjectSet,
    SubjectWorkflowState,
    Workflow,
    WorkflowVersion,
)
from projects.versioning import plan_tree_change, save_tree


@admin.register(Project)
class ProjectAdmin(admin.ModelAdmin):
    list_display = ["slug", "title", "created_at"]
    filter_horizontal = ["owners"]
    prepopulated_fields = {"slug": ["title"]}


class WorkflowForm(forms.ModelForm):
    """A tree edited here is judged as the project builder judges it (projects.versioning): a change
    of what a launched workflow's answers mean is refused, since it would reinterpret them."""

    class Meta:
        model = Workflow
        fields = "__all__"

    def clean(self) -> dict:
        cleaned = super().clean()
        if self.instance.pk and "tasks" in self.changed_data and "tasks" in cleaned:
            stored = Workflow.objects.get(pk=self.instance.pk)
            stored.retirement = cleaned.get("retirement", stored.retirement)
            try:
                plan = plan_tree_change(stored, cleaned["tasks"])
            except InputRejected as error:
                raise ValidationError({"tasks": [problem for problems in error.errors.values() for problem in problems]}) from None
            if plan.new_workflow:
                raise ValidationError({"tasks": (
                    "This workflow has been launched: this change alters what its answers mean and would reinterpret "
                    f"its classifications. Save it in the project builder, which makes it version {plan.version}, a new workflow."
                )})
        return cleaned


@admin.register(Workflow)
class WorkflowAdmin(admin.ModelAdmin):
    form = WorkflowForm
    list_display = ["name", "project", "version_text", "active", "gold_feedback_rate", "updated_at"]
    list_filter = ["active", "project"]
    filter_horizontal = ["subject_sets"]
    readonly_fields = ["version_major", "version_minor", "previous_version", "launched_at"]

    def save_model(self, request: HttpRequest, obj: Workflow, form: forms.ModelForm, change: bool) -> None:
        if not (change and "tasks" in form.changed_data):
            super().save_model(request, obj, form, change)
            return
        tasks = obj.tasks
        obj.tasks = Workflow.objects.get(pk=obj.pk).tasks
        super().save_model(request, obj, form, change)
        save_tree(obj, tasks, request.user)  # the version moves and the old tree is kept


@admin.register(SubjectSet)
class SubjectSetAdmin(admin.ModelAdmin):
    list_display = ["name", "project", "created_at"]


class SubjectImageInline(admin.TabularInline):
    model = SubjectImage
    extra = 0


@admin.register(Subject)
class SubjectAdmin(admin.ModelAdmin):
    list_display = ["external_id", "subject_set", "created_at"]
    search_fields = ["external_id"]
    list_filter = ["subject_set"]
    inlines = [SubjectImageInline]


@admin.register(SubjectWorkflowState)
class SubjectWorkflowStateAdmin(admin.ModelAdmin):
    list_display = ["subject", "workflow", "status", "classification_count", "priority", "retirement_reason", "retired_at"]
    list_filter = ["status", "workflow", "retirement_reason", "is_gold"]
    raw_id_fields = ["subject"]


@admin.register(AdminAction)
class AdminActionAdmin(admin.ModelAdmin):
    list_display = ["at", "workflow", "user", "action"]
    list_filter = ["action", "workflow"]
    readonly_fields = ["workflow", "user", "action", "details", "at"]


@admin.register(WorkflowVersion)
class WorkflowVersionAdmin(admin.ModelAdmin):
    list_display = ["workflow", "major", "minor", "change", "created_by", "created_at"]
    list_filter = ["change"]
    readonly_fields = ["workflow", "major", "minor", "tasks", "change", "created_by", "created_at"]
