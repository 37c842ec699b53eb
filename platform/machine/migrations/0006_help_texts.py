"""Help texts only (no schema change): they name the modules that now hold the code they point to
(``machine.pretraining``, ``machine.evaluation``, ``machine.heartbeat``)."""

import django.utils.timezone
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('machine', '0005_pretraining_attempts'),
    ]

    operations = [
        migrations.AlterField(
            model_name='machineagent',
            name='pretrained_model',
            field=models.BinaryField(blank=True, help_text="ml.GalaxyClassifier.to_bytes() of a trunk pretrained on the workflow's unlabelled images (machine.pretraining.pretrain_machine): its first model version starts from it.", null=True),
        ),
        migrations.AlterField(
            model_name='modelversion',
            name='gold_predictions',
            field=models.JSONField(blank=True, default=dict, help_text="{gold subject id: first-question probabilities}, out of fold (machine.evaluation.calibrate_on_gold): its successors' retirement rule averages them with theirs."),
        ),
        migrations.AlterField(
            model_name='modelversion',
            name='heartbeat_at',
            field=models.DateTimeField(default=django.utils.timezone.now, help_text="Its training run's last sign of life (machine.heartbeat.heartbeat): a version still training whose run is silent longer than HEARTBEAT_LIMIT_SECONDS is marked failed, its worker lost."),
        ),
    ]
