"""Subjects uploaded in the project builder: image files and their manifest in one request, stored
all or nothing.

Everything is checked before anything is written, and every problem is reported at once: the
manifest line by line (``projects.manifest``, the format ``manage.py import_subjects`` reads),
each image with Pillow (``projects.manifest.inspect_image``), gold answers against the workflow's
tree, sizes against the limits (``UploadLimits``). Then one transaction creates the subjects, their
images and their queue entries; files already written to storage are deleted if it fails.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction

from projects.errors import InputRejected
from projects.manifest import capped, inspect_image, parse_manifest
from projects.models import Subject, SubjectSet, Workflow
from projects.task_tree import gold_problems

MB = 1024 * 1024


@dataclass(frozen=True)
class UploadLimits:
    max_file_bytes: int
    max_total_bytes: int
    max_files: int


def upload_limits() -> UploadLimits:
    """The limits of one upload, from the settings (``CHORUS_UPLOAD_*`` in the environment)."""
    return UploadLimits(settings.UPLOAD_MAX_FILE_BYTES, settings.UPLOAD_MAX_TOTAL_BYTES, settings.UPLOAD_MAX_FILES)


def size_text(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def body_size_problem(content_length: str | None, limits: UploadLimits) -> InputRejected | None:
    """The refusal of an upload whose declared size is over the limit, before a byte of it is read
    (HTTP 413; 411 when the size is not declared, since it could not be bounded)."""
    try:
        length = int(content_length or "")
    except ValueError:
        return InputRejected({"files": ["the upload must declare its size (Content-Length)"]}, status=411)
    if length > limits.max_total_bytes:
        return InputRejected(
            {"files": [f"the upload is {size_text(length)}; at most {size_text(limits.max_total_bytes)} at once "
                       f"(and {size_text(limits.max_file_bytes)} per file): send it in parts"]}, status=413,
        )
    return None


@dataclass(frozen=True)
class UploadReport:
    subject_set: SubjectSet
    created: int
    gold: int
    queued: int


def upload_subjects(
    workflow: Workflow, subject_set_name: str, manifest: UploadedFile | None, images: list[UploadedFile], user: Any = None,
    limits: UploadLimits | None = None,
) -> UploadReport:
    """Add the manifest's subjects, with their images, to the subject set named ``subject_set_name``
    (created if new) of ``workflow``'s project and queue them in ``workflow``; InputRejected with
    every problem by field (``subject_set``, ``manifest``: by line, ``images``: by file) and nothing
    stored."""
    from projects.services import add_subject_image, link_subject_set, log_admin_action

    limits = limits or upload_limits()
    errors: dict[str, list[str]] = {}
    name = (subject_set_name or "").strip()
    if not name:
        errors["subject_set"] = ["give the subject set a name"]
    elif len(name) > 200:
        errors["subject_set"] = ["at most 200 characters"]
    files: dict[str, UploadedFile] = {}
    image_errors: list[str] = []
    if not images:
        image_errors.append("choose at least one image")
    if len(images) > limits.max_files:
        image_errors.append(f"{len(images)} files; at most {limits.max_files} at once")
    for upload in images:
        if upload.name in files:
            image_errors.append(f"{upload.name} is there twice")
        elif upload.size > limits.max_file_bytes:
            image_errors.append(f"{upload.name} is {size_text(upload.size)}; at most {size_text(limits.max_file_bytes)} per file")
        else:
            files[upload.name] = upload
    if sum(upload.size for upload in images) + (manifest.size if manifest else 0) > limits.max_total_bytes:
        image_errors.append(f"the files come to more than {size_text(limits.max_total_bytes)}")
    sizes: dict[str, tuple[int, int]] = {}
    for file_name, upload in files.items():
        size, problem = inspect_image(upload)
        if problem:
            image_errors.append(f"{file_name} {problem}")
        else:
            sizes[file_name] = size
    rows = []
    if manifest is None:
        errors["manifest"] = ["choose the manifest (CSV) that names each image"]
    else:
        try:
            text = manifest.read().decode("utf-8-sig")
        except UnicodeDecodeError:
            errors["manifest"] = ["the manifest is not UTF-8 text (save the CSV as UTF-8)"]
        else:
            existing = set(
                Subject.objects.filter(subject_set__project=workflow.project, subject_set__name=name).values_list("external_id", flat=True)
            )

            sent = {upload.name for upload in images}

            def image_problem(image_name: str) -> str | None:
                if image_name in sizes:
                    return None
                return "is refused (see images)" if image_name in sent else "was not uploaded"

            parsed = parse_manifest(
                text.splitlines(keepends=True), image_problem,
                lambda gold, names: gold_problems(workflow.tasks, gold, sizes.get(names[0])),
            )
            problems = list(parsed.problems)
            for row in parsed.rows:
                if row.external_id in existing:
                    problems.append(f"line {row.line}: external_id {row.external_id!r} is already in subject set {name!r}")
            if not parsed.rows and not problems:
                problems.append("the manifest names no subject")
            if problems:
                errors["manifest"] = capped(problems)
            rows = parsed.rows
            image_errors.extend(f"{file_name} is not named in the manifest" for file_name in files if file_name not in parsed.named)
    if image_errors:
        errors["images"] = capped(image_errors)
    if errors:
        raise InputRejected(errors)

    stored: list[str] = []
    try:
        with transaction.atomic():
            subject_set, _ = SubjectSet.objects.get_or_create(project=workflow.project, name=name)
            for row in rows:
                subject = Subject.objects.create(subject_set=subject_set, external_id=row.external_id, metadata=row.metadata, gold=row.gold)
                for position, image_name in enumerate(row.images):
                    upload = files[image_name]
                    upload.seek(0)
                    stored.append(add_subject_image(subject, position, image_name, upload).file.name)
            queued = link_subject_set(workflow, subject_set)
            gold = sum(1 for row in rows if row.gold)
            log_admin_action(workflow, user, "subjects_uploaded",
                             {"subject_set": subject_set.name, "subjects": len(rows), "images": len(stored), "gold": gold})
    except BaseException:
        for stored_name in stored:
            default_storage.delete(stored_name)
        raise
    return UploadReport(subject_set, len(rows), gold, queued)
