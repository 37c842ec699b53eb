"""``manage.py build_embeddings --workflow N [--force]``: embed a workflow's subjects now, in this
process, with the model serving it (what the "ml" worker does after a promotion)."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError, CommandParser

from projects.models import Workflow
from similarity.embeddings import build_space


class Command(BaseCommand):
    help = "Embed a workflow's subjects with its serving model (or pretrained trunk) into pgvector."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--workflow", type=int, required=True)
        parser.add_argument("--force", action="store_true", help="build again even if these weights embedded these subjects already")

    def handle(self, *args: object, **options: object) -> None:
        if not Workflow.objects.filter(pk=options["workflow"]).exists():
            raise CommandError(f"no workflow {options['workflow']}")
        space = build_space(int(options["workflow"]), force=bool(options["force"]))
        if space is None:
            raise CommandError("nothing to embed with yet (no promoted model version, no pretrained trunk), or a build is running")
        self.stdout.write(f"{space}: {space.n_subjects} subjects, {space.dimensions} dimensions, timings {space.timings}")
