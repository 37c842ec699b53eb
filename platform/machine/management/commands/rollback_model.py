"""``manage.py rollback_model --workflow N``: serve again the model version promoted before the current one."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from machine import promotion
from projects.models import Workflow


class Command(BaseCommand):
    help = "Roll a workflow's CNN back to the previously promoted version."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--workflow", type=int, required=True)

    def handle(self, *args: Any, **options: Any) -> None:
        workflow = Workflow.objects.filter(pk=options["workflow"]).first()
        if workflow is None:
            raise CommandError(f"no workflow {options['workflow']}")
        version = promotion.roll_back(workflow)
        if version is None:
            raise CommandError("no earlier promoted version to roll back to")
        self.stdout.write(f"workflow {workflow.pk} now serves model v{version.version}")
