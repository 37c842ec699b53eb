"""Whole-workflow retirement: the machine's term of the queue priority, and existing workflows kept
on the rule they were set up with.

A workflow saved before this release with a bare ``"policy"`` was retired by its first question; it
gets ``"scope": "first_question"`` written in so that it is never silently reinterpreted (the new
default, the whole workflow, applies to workflows created from now on).
"""

from django.db import migrations, models


def keep_first_question_rule(apps, schema_editor):
    Workflow = apps.get_model("projects", "Workflow")
    for workflow in Workflow.objects.all():
        settings = workflow.retirement or {}
        if "scope" not in settings and "policy" in settings:
            workflow.retirement = {"scope": "first_question", **settings}
            workflow.save(update_fields=["retirement"])


class Migration(migrations.Migration):
    dependencies = [("projects", "0002_active_learning_and_audit")]

    operations = [
        migrations.AddField(
            model_name="subjectworkflowstate",
            name="machine_score",
            field=models.FloatField(
                blank=True, null=True,
                help_text="The machine's acquisition term of the priority (its score's rank in (0, 1)); see docs/queue.md.",
            ),
        ),
        migrations.AlterField(
            model_name="workflow",
            name="retirement",
            field=models.JSONField(
                blank=True, default=dict,
                help_text='When a subject retires: {"scope": "workflow", "required": [...], "bar": 0.01 | {task: bar}, '
                '"min": 3, "budget": 40} or {"scope": "first_question", "policy": "min:3,posterior:0.99,max:40"}, '
                'plus "estimator" options; see aggregation/workflow.py.',
            ),
        ),
        migrations.RunPython(keep_first_question_rule, migrations.RunPython.noop),
    ]
