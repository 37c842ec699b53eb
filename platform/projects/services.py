"""Services that change projects, workflows and subjects: import, linking, retirement, the demo."""

from __future__ import annotations

import csv
import random
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from django.core.files import File
from django.db import transaction
from django.utils import timezone
from PIL import Image

from projects.manifest import ManifestError, inspect_image, read_manifest_file
from projects.models import Project, Subject, SubjectImage, SubjectSet, SubjectWorkflowState, Workflow
from projects.task_tree import validate_task_tree

DEMO_DATA_ROOT = Path(__file__).resolve().parents[1] / "demo_data"
DEMO_DATA_DIR = DEMO_DATA_ROOT / "gz1"
DEMO_PROJECT_SLUG = "galaxy-demo"
DEMO_WORKFLOW_NAME = "Galaxy shapes"
# The demo's samples (demo_data/README.md): name -> (folder, subject set). "small" (48 galaxies, the
# tests' and ``create_demo_project``'s default) is too small for the machine to learn anything;
# "gz1_2000" (2,000 galaxies, ``manage.py demo``'s default) is big enough for the CNN in the loop.
DEMO_SAMPLES: dict[str, tuple[Path, str]] = {
    "small": (DEMO_DATA_DIR, "GZ1 sample"),
    "gz1_2000": (DEMO_DATA_ROOT / "gz1_2000", "GZ1 2,000 galaxies"),
}
# The machine's settings (machine/config.py) of the demo workflow once it holds the 2,000 galaxies:
# a retraining every 100 human retirements from 100 training subjects, small images and few epochs
# (the demo runs on a laptop's CPU), and bars for machine retirement below the platform's defaults
# (0.9 and 0.98), which a CNN trained on a few hundred galaxies and measured on ~100 gold ones
# does not reach within a demo. Measured (bench/demo_loop.py, issue 32): the first versions of the
# 48-px CNN are ~0.84 right on the held-out gold T0 (75% of it smooth), and only ~8 gold galaxies
# reach 0.99, fewer than the 20 a retirement record needs; so the demo retires from 0.95 and gates
# the version at 0.8. What keeps the machine's retirements honest is the other gate: the line must be
# right on the gold galaxies it would itself have retired. The demo has 100 gold galaxies and a
# version is sure of 14-25 of them in its first 10 minutes, so that record is judged from 10 of them
# at 0.9 (one miss in 14 is 0.93, which a 0.95 bar reads as a failed line); the dashboard's tally
# scores the machine's retirements against GZ1 meanwhile (98.9% right in bench/demo_loop.py).
DEMO_ACTIVE_LEARNING: dict = {
    "enabled": True,
    "retrain_every": 100,
    "min_train": 100,
    "image_size": 48,
    "pretrain_epochs": 5,
    "epochs": 6,
    "warm_epochs": 2,
    "min_steps": 100,
    "mc_samples": 10,
    "machine_threshold": 0.95,
    "min_gold_accuracy": 0.8,
    "min_gold_subjects": 10,
    "min_retire_accuracy": 0.9,
}

DEMO_TASKS: dict = {
    "first_task": "T0",
    "tasks": {
        "T0": {
            "type": "single",
            "question": "Is the galaxy simply smooth and rounded, does it have features or a disk, "
            "is it a merger, or is it a star or artifact?",
            "help": "Look at the whole galaxy. Smooth galaxies are rounded blobs with no structure; "
            "disks show a flat shape, spiral arms or a bar; mergers are two galaxies colliding.",
            "answers": [
                {"label": "Smooth", "next": "T2"},
                {"label": "Features or disk", "next": "T1"},
                {"label": "Merger", "next": "T2"},
                {"label": "Star or artifact", "next": "T2"},
            ],
        },
        "T1": {
            "type": "single",
            "question": "Is the disk seen edge-on, or are its spiral arms winding clockwise or anticlockwise?",
            "help": "Follow an arm outwards from the centre: does it turn like the hands of a clock?",
            "answers": [
                {"label": "Edge-on disk", "next": "T2"},
                {"label": "Clockwise spiral", "next": "T2"},
                {"label": "Anticlockwise spiral", "next": "T2"},
            ],
            "mirror_swaps": [[1, 2]],  # a mirror image turns a clockwise spiral anticlockwise
        },
        "T2": {
            "type": "drawing",
            "instruction": "Mark each companion galaxy or bright clump (or none).",
            "tools": [{"type": "rectangle", "label": "Companion or clump", "min": 0, "max": 10}],
            "next": None,
        },
    },
}


@dataclass
class ImportReport:
    created: int = 0
    unchanged: int = 0
    errors: list[str] = field(default_factory=list)


def read_manifest(manifest: Path, image_dir: Path) -> list[dict]:
    """Read and check a whole manifest before anything is written (nothing half-imported); the format
    is ``projects.manifest``'s, the builder's upload reads the same."""
    return [
        {"line": row.line, "external_id": row.external_id, "images": [image_dir / name for name in row.images],
         "gold": row.gold, "metadata": row.metadata}
        for row in read_manifest_file(manifest, image_dir)
    ]


def _check_image(path: Path, line: int) -> None:
    with open(path, "rb") as handle:
        _, problem = inspect_image(handle)
    if problem:
        raise ManifestError(f"line {line}: {path.name} {problem}")


def import_subjects(
    subject_set: SubjectSet,
    manifest: Path,
    image_dir: Path,
    workflows: Iterable[Workflow] = (),
    progress: Callable[[Iterable[dict]], Iterable[dict]] = lambda rows: rows,
) -> ImportReport:
    """Import a folder of images and its manifest into ``subject_set``; re-running adds only what is new.

    The manifest is checked whole first; then each subject is written in its own transaction with
    its images, so an interrupted import resumes where it stopped when it is run again.
    """
    rows = read_manifest(manifest, image_dir)
    for row in rows:
        for path in row["images"]:
            _check_image(path, row["line"])
    report = ImportReport()
    existing = set(subject_set.subjects.values_list("external_id", flat=True))
    workflows = list(workflows)
    for row in progress(rows):
        if row["external_id"] in existing:
            report.unchanged += 1
            continue
        with transaction.atomic():
            subject = Subject.objects.create(
                subject_set=subject_set, external_id=row["external_id"], metadata=row["metadata"], gold=row["gold"]
            )
            for position, path in enumerate(row["images"]):
                with open(path, "rb") as handle:
                    add_subject_image(subject, position, path.name, File(handle))
        report.created += 1
    for workflow in workflows:
        link_subject_set(workflow, subject_set)
    return report


def add_subject_image(subject: Subject, position: int, name: str, content: File) -> SubjectImage:
    """Store one image of a subject through Django's storage API, with its size in pixels."""
    with Image.open(content) as image:
        width, height = image.size
    content.seek(0)
    image = SubjectImage(subject=subject, position=position, width=width, height=height)
    image.file.save(name, content, save=True)
    return image


def link_subject_set(workflow: Workflow, subject_set: SubjectSet) -> int:
    """Serve a subject set in a workflow: one queue entry per subject not yet in it."""
    workflow.subject_sets.add(subject_set)
    have = set(SubjectWorkflowState.objects.filter(workflow=workflow).values_list("subject_id", flat=True))
    task_keys = set(workflow.tasks["tasks"])
    fresh = fresh_priority(workflow)
    new_states = [
        SubjectWorkflowState(
            workflow=workflow, subject=subject, is_gold=bool(subject.gold and task_keys & set(subject.gold)),
            priority=fresh + random.random() * FRESH_JITTER,
        )
        for subject in subject_set.subjects.all()
        if subject.id not in have
    ]
    SubjectWorkflowState.objects.bulk_create(new_states, batch_size=2000)
    return len(new_states)


# New subjects of a workflow are all worth the same to the engine (nobody has seen them); a small
# random spread orders them among themselves so that volunteers do not all start on the same ones.
FRESH_JITTER = 1e-3


def fresh_value(workflow: Workflow) -> float:
    """What one human classification of a subject nobody has classified yet is worth, in bits, under
    the workflow's engine settings (docs/queue.md)."""
    from live import engine as engine_lib

    config = engine_lib.engine_config(workflow.retirement or {}, workflow.tasks)
    return engine_lib.queue_value(engine_lib.new_engine(workflow.tasks, config), "unseen subject")


def fresh_priority(workflow: Workflow) -> float:
    """The queue priority of a new subject, on the same scale as the ones the live loop writes, so
    that new and partly classified subjects compare."""
    from live.services import queue_priority

    return queue_priority(fresh_value(workflow), None)


def create_workflow(project: Project, name: str, tasks: dict, **settings: object) -> Workflow:
    """A new workflow; its task tree and retirement settings are validated first (ValueError)."""
    from live.engine import validate_engine_config

    errors = validate_task_tree(tasks)
    if not errors:
        errors = validate_engine_config(settings.get("retirement") or {}, tasks)
    if errors:
        raise ValueError("; ".join(errors))
    from projects.versioning import record_version

    workflow = Workflow.objects.create(project=project, name=name, tasks=tasks, **settings)
    record_version(workflow, "created")  # its first tree, kept (projects/versioning.py)
    return workflow


def retire_subject(state: SubjectWorkflowState, reason: str) -> bool:
    """Retire one subject of a workflow; returns False if it was already retired (first reason wins)."""
    updated = SubjectWorkflowState.objects.filter(pk=state.pk, status=SubjectWorkflowState.Status.ACTIVE).update(
        status=SubjectWorkflowState.Status.RETIRED, retired_at=timezone.now(), retirement_reason=reason
    )
    if updated:
        state.refresh_from_db()
    return bool(updated)


def create_demo_project(owner: object | None = None, sample: str = "small", galaxies: int | None = None) -> Workflow:
    """The ready-to-classify galaxy project of the demo, from a sample committed in demo_data/.

    ``sample`` is a key of ``DEMO_SAMPLES``: ``"small"`` (48 galaxies, no machine: fast, for tests)
    or ``"gz1_2000"`` (2,000 galaxies; the first time they are added the machine is turned on with
    ``DEMO_ACTIVE_LEARNING``, unless the workflow already has machine settings of its own).
    ``galaxies``: import only the sample's first that many (quick tries, the browser test); a later
    call with more, or none, adds the rest.
    Idempotent: running it again returns the existing workflow and imports nothing twice.
    """
    if sample not in DEMO_SAMPLES:
        raise ValueError(f"unknown demo sample {sample!r}: one of {', '.join(DEMO_SAMPLES)}")
    data_dir, set_name = DEMO_SAMPLES[sample]
    project, _ = Project.objects.get_or_create(
        slug=DEMO_PROJECT_SLUG,
        defaults={
            "title": "Chorus Galaxy Demo",
            "description": "Classify SDSS galaxies by shape, as Galaxy Zoo volunteers did, and mark "
            "companion galaxies and bright clumps.",
            "attribution": (data_dir / "README.md").read_text(encoding="utf-8"),
        },
    )
    if owner is not None:
        project.owners.add(owner)
    workflow = project.workflows.filter(name=DEMO_WORKFLOW_NAME).first()
    if workflow is None:
        workflow = create_workflow(
            project,
            DEMO_WORKFLOW_NAME,
            DEMO_TASKS,
            gold_feedback_rate=1.0,
            field_guide=[
                {"title": "Smooth", "text": "Rounded or elliptical, no features; brightest in the middle."},
                {"title": "Features or disk", "text": "A disk, spiral arms, a bar or a ring."},
                {"title": "Merger", "text": "Two or more galaxies colliding, often with tidal tails."},
                {"title": "Star or artifact", "text": "A star with diffraction spikes, or a bad image."},
            ],
            tutorial=[
                {"title": "Welcome", "text": "You will see a galaxy from the Sloan Digital Sky Survey."},
                {"title": "Answer", "text": "Pick an answer with the mouse or the number keys; Enter goes on."},
                {"title": "Mark", "text": "Draw a box around each companion or clump, or none, then submit."},
            ],
        )
    subject_set, created = SubjectSet.objects.get_or_create(project=project, name=set_name)
    if created and sample != "small" and not workflow.active_learning:
        workflow.active_learning = dict(DEMO_ACTIVE_LEARNING)
        workflow.save(update_fields=["active_learning", "updated_at"])
    manifest = data_dir / "manifest.csv"
    if galaxies is None:
        import_subjects(subject_set, manifest, data_dir / "images", [workflow])
    else:
        with tempfile.TemporaryDirectory() as folder:
            lines = manifest.read_text(encoding="utf-8").splitlines(keepends=True)
            first = Path(folder) / "manifest.csv"
            first.write_text("".join(lines[: galaxies + 1]), encoding="utf-8")
            import_subjects(subject_set, first, data_dir / "images", [workflow])
    _add_demo_truth(subject_set, data_dir / "manifest.csv")
    return workflow


DEMO_TRUTH_COLUMNS = ("#truth.T0", "#truth.T1")


def _add_demo_truth(subject_set: SubjectSet, manifest: Path) -> int:
    """Give the demo galaxies of a database made before the manifests had them their hidden
    ``#truth.*`` cells (the GZ1 answers the dashboard's tally scores against); returns how many."""
    missing = list(subject_set.subjects.exclude(metadata__has_key=DEMO_TRUTH_COLUMNS[0]))
    if not missing:
        return 0
    with open(manifest, newline="", encoding="utf-8") as handle:
        rows = {row["external_id"]: row for row in csv.DictReader(handle)}
    for subject in missing:
        row = rows.get(subject.external_id, {})
        subject.metadata = {**subject.metadata, **{column: row.get(column, "") for column in DEMO_TRUTH_COLUMNS}}
    Subject.objects.bulk_update(missing, ["metadata"], batch_size=500)
    return len(missing)


def log_admin_action(workflow: Workflow, user: object | None, action: str, details: dict | None = None) -> None:
    """Record an admin's change to a workflow (the audit log shown on the admin page)."""
    from projects.models import AdminAction

    AdminAction.objects.create(
        workflow=workflow, user=user if getattr(user, "is_authenticated", False) else None, action=action, details=details or {}
    )
