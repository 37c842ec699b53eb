"""``manage.py import_zooniverse``: a Zooniverse (Panoptes) workflow export and classification export
into a Chorus project, then aggregated by the live loop. Idempotent; see docs/zooniverse.md."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from projects.zooniverse import ZooniverseError, import_zooniverse


class Command(BaseCommand):
    help = (
        "Import a Zooniverse workflow export and classification export (the CSV files Zooniverse projects "
        "download): the workflow's task tree, its subjects and every classification of one workflow version."
    )

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> CommandParser:
        # ``--version`` is the Panoptes workflow version here, not Django's: ours replaces it.
        return super().create_parser(prog_name, subcommand, conflict_handler="resolve", **kwargs)

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--project", required=True, help="project slug (created if missing)")
        parser.add_argument("--workflows", required=True, type=Path, help="the Panoptes workflow export (CSV)")
        parser.add_argument("--classifications", required=True, type=Path, help="the Panoptes classification export (CSV)")
        parser.add_argument("--workflow-id", type=int, help="Panoptes workflow id (default: the only one in the export)")
        parser.add_argument("--version", dest="workflow_version",
                            help="workflow version major.minor or major (default: the latest in the classifications)")
        parser.add_argument("--images", type=Path, help="folder of images named by subject id or by a metadata file name")
        parser.add_argument("--no-aggregate", action="store_true", help="store only; the live workers aggregate later")

    def handle(self, *args: Any, **options: Any) -> None:
        for option in ("workflows", "classifications"):
            if not options[option].is_file():
                raise CommandError(f"{options[option]} not found")
        try:
            report = import_zooniverse(
                options["project"], options["workflows"], options["classifications"],
                workflow_id=options["workflow_id"], version=options["workflow_version"], images=options["images"],
                aggregate=not options["no_aggregate"],
            )
        except ZooniverseError as error:
            raise CommandError("nothing was imported:\n" + "\n".join(error.problems)) from error
        for warning in report.warnings:
            self.stderr.write(self.style.WARNING(f"warning: {warning}"))
        skipped = ", ".join(f"{n} of version {v}" for v, n in sorted(report.skipped_versions.items())) or "none"
        self.stdout.write(
            self.style.SUCCESS(
                f"Zooniverse workflow {report.panoptes_workflow_id} version(s) {', '.join(report.versions)} -> "
                f"Chorus workflow {report.workflow_id} {report.workflow_name!r} in project {report.project}\n"
                f"subjects: {report.subjects_created} created, {report.subjects_existing} already there\n"
                f"classifications: {report.classifications_imported} imported, {report.classifications_existing} "
                f"already there; skipped: {skipped}; {report.skipped_workflows} of other workflows\n"
                f"aggregated: {report.applied} applied, {report.retired} subjects retired"
            )
        )
