"""Every question's out-of-fold gold predictions (the machine answers every single-choice question of a
whole-workflow tree); ``gold_predictions`` stays its first question's."""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('machine', '0006_help_texts'),
    ]

    operations = [
        migrations.AddField(
            model_name='modelversion',
            name='gold_predictions_by_question',
            field=models.JSONField(blank=True, default=dict, help_text='{question key: {gold subject id: probabilities}} of every question it answers, out of fold (empty for versions from before the machine answered several questions: gold_predictions is their first question\'s).'),
        ),
        migrations.AlterField(
            model_name='modelversion',
            name='gold_predictions',
            field=models.JSONField(blank=True, default=dict, help_text="{gold subject id: probabilities} of its first question, out of fold (machine.evaluation.calibrate_on_gold): its successors' retirement rule averages them with theirs."),
        ),
        migrations.AlterField(
            model_name='modelversion',
            name='metrics',
            field=models.JSONField(blank=True, default=dict, help_text='On the held-out gold set: accuracy, ece, confusion, n_train, n_gold_test, trained, ... (its first question\'s), and questions: {question key: the same for that question, with its own trained}'),
        ),
    ]
