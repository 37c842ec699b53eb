"""Each version keeps its out-of-fold gold predictions; ``calibration_share`` becomes ``calibration_folds``.

Workflows that had ``calibration_share: 0`` (no calibration) get ``calibration_folds: 0``; any other
share gets the new default, two folds (cross-fitting replaces the one calibration/test split)."""

from django.db import migrations, models


def share_to_folds(apps, schema_editor) -> None:
    Workflow = apps.get_model("projects", "Workflow")
    for workflow in Workflow.objects.filter(active_learning__has_key="calibration_share"):
        share = workflow.active_learning.pop("calibration_share")
        workflow.active_learning["calibration_folds"] = 0 if share == 0 else 2
        workflow.save(update_fields=["active_learning"])


def folds_to_share(apps, schema_editor) -> None:
    Workflow = apps.get_model("projects", "Workflow")
    for workflow in Workflow.objects.filter(active_learning__has_key="calibration_folds"):
        folds = workflow.active_learning.pop("calibration_folds")
        workflow.active_learning["calibration_share"] = 0.0 if folds == 0 else 0.5
        workflow.save(update_fields=["active_learning"])


class Migration(migrations.Migration):

    dependencies = [
        ("machine", "0001_initial"),
        ("projects", "0002_active_learning_and_audit"),
    ]

    operations = [
        migrations.AddField(
            model_name="modelversion",
            name="gold_predictions",
            field=models.JSONField(blank=True, default=dict, help_text="{gold subject id: first-question probabilities}, out of fold (machine.services.calibrate_on_gold): its successors' retirement rule averages them with theirs."),
        ),
        migrations.RunPython(share_to_folds, folds_to_share),
    ]
