"""``ModelVersion.heartbeat_at``: a training run's last sign of life, so that a run whose worker was
killed is found out (``machine.services.fail_lost_runs``). Existing rows get the migration's time: a
version left training by a run lost before it is marked failed ``HEARTBEAT_LIMIT_SECONDS`` later."""

import django.utils.timezone
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("machine", "0002_gold_predictions"),
    ]

    operations = [
        migrations.AddField(
            model_name="modelversion",
            name="heartbeat_at",
            field=models.DateTimeField(default=django.utils.timezone.now, help_text="Its training run's last sign of life (machine.services.heartbeat): a version still training whose run is silent longer than HEARTBEAT_LIMIT_SECONDS is marked failed, its worker lost."),
        ),
    ]
