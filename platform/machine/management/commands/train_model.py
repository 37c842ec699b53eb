"""``manage.py train_model --workflow N [--queue] [--no-promote]``: train a new model version now.

Without ``--queue`` it trains in this process (promoting it and predicting if it is better) and
prints its gold metrics; with ``--queue`` it hands the run to the "ml" workers.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from machine import agents, training
from machine.config import machine_settings
from projects.models import Workflow


class Command(BaseCommand):
    help = "Train a new version of a workflow's CNN from its retired subjects (promoted if better)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--workflow", type=int, required=True)
        parser.add_argument("--queue", action="store_true", help="queue the run on the ml workers instead")
        parser.add_argument("--no-promote", action="store_true", help="evaluate only; do not promote")

    def handle(self, *args: Any, **options: Any) -> None:
        workflow = Workflow.objects.filter(pk=options["workflow"]).first()
        if workflow is None:
            raise CommandError(f"no workflow {options['workflow']}")
        try:
            machine_settings(workflow)
            agents.first_question(workflow)
        except ValueError as error:
            raise CommandError(str(error)) from error
        if options["queue"]:
            training.request_retraining(workflow, reason="command")
            self.stdout.write("training queued on the ml workers")
            return
        version = training.train_model_version(workflow.pk, reason="command", promote=not options["no_promote"])
        if version is None:
            raise CommandError("too few human-retired subjects to train on (see min_train)")
        version.refresh_from_db()
        m = version.metrics
        self.stdout.write(
            f"model v{version.version}: {version.state}; gold accuracy {m.get('accuracy')}, ECE {m.get('ece')}, "
            f"{m.get('n_train')} training subjects, {m.get('n_gold_test')} gold; trained: {m.get('trained_reason')}"
        )
