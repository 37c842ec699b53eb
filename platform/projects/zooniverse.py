"""Bring a Zooniverse (Panoptes) project to Chorus: its workflow export and its classification export.

``import_zooniverse`` reads both CSV files as Zooniverse projects download them, checks everything
first (a bad row is reported by file and line and nothing is written), then, in one transaction,
creates the project (if missing), the workflow (the Panoptes task JSON translated into a Chorus task
tree), the subjects (from the classification export's ``subject_data``) and one classification per
Panoptes classification, stored through ``classifications.services.submit_classifications`` — the
same path the API uses — with the idempotency key ``zooniverse-<Panoptes classification id>``.
The live loop then aggregates them (``live.services.apply_pending``): skills are learnt and
subjects retire. Running it again imports nothing twice. See docs/zooniverse.md.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from django.contrib.auth import get_user_model
from django.core.files import File
from django.core.files.base import ContentFile
from django.db import transaction
from PIL import Image, ImageDraw, UnidentifiedImageError

from projects.models import Project, Subject, SubjectImage, SubjectSet, Workflow
from projects.task_tree import MAX_MARKS_CEILING, validate_annotations, validate_task_tree

KEY_PREFIX = "zooniverse-"
USERNAME_PREFIX = "zooniverse-"
PLACEHOLDER_SIZE = (400, 400)  # when neither an image file nor the export's subject_dimensions give a size
MAX_PLACEHOLDER_SIDE = 4000
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".webp", ".tif", ".tiff")
DEFAULT_TOOL_MAX = 20
MAX_METADATA_BYTES = 4096
BATCH = 200
MAX_REPORTED_ERRORS = 50
WORKFLOW_COLUMNS = {"workflow_id", "display_name", "version", "tasks"}
CLASSIFICATION_COLUMNS = {"classification_id", "workflow_id", "workflow_version", "annotations", "subject_data", "subject_ids"}
KEPT_METADATA = ("source", "session", "viewport", "started_at", "finished_at", "user_agent", "user_language",
                 "utc_offset", "subject_dimensions")


class ZooniverseError(ValueError):
    """The exports cannot be imported; ``problems`` lists each one as ``file: line N: message``."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


Version = tuple[int, int]


def parse_version(raw: str) -> Version | None:
    """Panoptes versions are ``major.minor`` ("16.55"); a bare major ("16") means minor 0 here."""
    major, _, minor = str(raw).strip().partition(".")
    if not major.isdigit() or (minor and not minor.isdigit()):
        return None
    return int(major), int(minor or 0)


def version_text(version: Version) -> str:
    return f"{version[0]}.{version[1]}"


@dataclass
class PanoptesWorkflow:
    """One row of the workflow export: one version of one workflow."""

    workflow_id: int
    name: str
    version: Version
    first_task: str
    tasks: dict
    strings: dict
    retirement: dict
    line: int


@dataclass
class Translation:
    """A Chorus task tree translated from Panoptes tasks, and what was left out of it."""

    tree: dict
    dropped_tasks: set[str] = field(default_factory=set)
    warnings: list[str] = field(default_factory=list)


@dataclass
class PlannedClassification:
    line: int
    classification_id: int
    subject_external_id: str
    volunteer_key: str
    user_id: str
    user_name: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    annotations: list[dict]
    metadata: dict


@dataclass
class PlannedSubject:
    external_id: str
    metadata: dict
    image: Path | None
    size: tuple[int, int]
    line: int


@dataclass
class ImportPlan:
    """Everything checked, nothing written yet."""

    workflow: PanoptesWorkflow
    translation: Translation
    versions: list[Version]
    subjects: dict[str, PlannedSubject]
    classifications: list[PlannedClassification]
    skipped_versions: dict[str, int]
    skipped_workflows: int
    warnings: list[str]


@dataclass
class ZooniverseReport:
    project: str = ""
    workflow_id: int | None = None
    workflow_name: str = ""
    panoptes_workflow_id: int | None = None
    versions: list[str] = field(default_factory=list)
    subjects_created: int = 0
    subjects_existing: int = 0
    classifications_imported: int = 0
    classifications_existing: int = 0
    skipped_versions: dict[str, int] = field(default_factory=dict)
    skipped_workflows: int = 0
    applied: int = 0
    retired: int = 0
    warnings: list[str] = field(default_factory=list)


# --- reading the CSV files ---------------------------------------------------------------------------


def _rows(path: Path, required: set[str]) -> Iterable[tuple[int, dict[str, str]]]:
    """The rows of a CSV export with the line each starts on (JSON cells span several lines)."""
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        missing = required - set(reader.fieldnames or [])
        if missing:
            raise ZooniverseError([f"{path.name}: line 1: the header lacks column(s) {', '.join(sorted(missing))}"])
        start = reader.line_num + 1
        for row in reader:
            if None in row:
                raise ZooniverseError([f"{path.name}: line {start}: more fields than the header has columns"])
            yield start, row
            start = reader.line_num + 1


def _json(raw: str | None, default: Any, expected: type, where: str, column: str) -> Any:
    if raw in (None, ""):
        return default
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as error:
        raise ZooniverseError([f"{where}: column {column} is not valid JSON ({error.msg})"]) from None
    if not isinstance(value, expected):
        raise ZooniverseError([f"{where}: column {column} must be a JSON {expected.__name__}"])
    return value


def read_workflow_export(path: Path) -> list[PanoptesWorkflow]:
    """Every row (workflow version) of a Panoptes workflow export."""
    out = []
    for line, row in _rows(path, WORKFLOW_COLUMNS):
        where = f"{path.name}: line {line}"
        workflow_id = (row.get("workflow_id") or "").strip()
        major, minor = (row.get("version") or "").strip(), (row.get("minor_version") or "0").strip() or "0"
        if not workflow_id.isdigit() or not major.isdigit() or not minor.isdigit():
            raise ZooniverseError([f"{where}: workflow_id, version and minor_version must be whole numbers"])
        tasks = _json(row.get("tasks"), {}, dict, where, "tasks")
        out.append(
            PanoptesWorkflow(
                workflow_id=int(workflow_id),
                name=(row.get("display_name") or "").strip() or f"Workflow {workflow_id}",
                version=(int(major), int(minor)),
                first_task=(row.get("first_task") or "").strip(),
                tasks=tasks,
                strings=_json(row.get("strings"), {}, dict, where, "strings"),
                retirement=_json(row.get("retirement"), {}, dict, where, "retirement"),
                line=line,
            )
        )
    return out


# --- the task tree -------------------------------------------------------------------------------------


def _text(workflow: PanoptesWorkflow, value: Any) -> str:
    """Panoptes tasks name their texts by key in ``strings`` ("T0.question"); older exports inline them."""
    if isinstance(value, str):
        return str(workflow.strings.get(value, value))
    return ""


def _count(value: Any, default: int) -> int | None:
    if value in (None, ""):
        return default
    try:
        number = int(value)
    except (TypeError, ValueError):
        return None
    return number


def translate_tasks(workflow: PanoptesWorkflow) -> Translation:
    """Translate Panoptes task JSON into a Chorus tree (``projects.task_tree``).

    ``single``/``multiple`` questions keep their answers (labels resolved from ``strings``), their
    branching (an answer's ``next``; ``next`` of a multiple question) and ``help``. ``drawing`` tasks
    keep their rectangle tools (``min``/``max``; tool sub-questions, ``details``, are dropped with a
    warning). A ``shortcut`` task (the "nothing here" check boxes attached to a question) is left out
    with a warning and its annotations dropped: it is never on the path of ``next`` links, so the rest
    of each classification still walks the tree. Any other task type (survey, text, combo, slider...)
    or drawing tool (point, ellipse...) is an error naming the task.
    """
    where = f"workflow {workflow.workflow_id} version {version_text(workflow.version)} (line {workflow.line})"
    errors: list[str] = []
    translation = Translation(tree={})
    tasks: dict[str, dict] = {}
    for key, task in workflow.tasks.items():
        if not isinstance(task, dict):
            errors.append(f"{where}: task {key}: not an object")
            continue
        kind = task.get("type")
        if kind == "shortcut":
            translation.dropped_tasks.add(key)
            translation.warnings.append(f"task {key}: shortcut task left out; its annotations are dropped")
            continue
        if kind in {"single", "multiple"}:
            answers = []
            for i, answer in enumerate(task.get("answers") or []):
                if not isinstance(answer, dict):
                    errors.append(f"{where}: task {key}: answer {i} is not an object")
                    continue
                out_answer: dict[str, Any] = {"label": _text(workflow, answer.get("label")) or f"Answer {i}"}
                if kind == "single":
                    out_answer["next"] = answer.get("next") or None
                answers.append(out_answer)
            chorus: dict[str, Any] = {"type": kind, "question": _text(workflow, task.get("question")) or key,
                                      "answers": answers}
            if kind == "multiple":
                chorus["next"] = task.get("next") or None
        elif kind == "drawing":
            tools = []
            for i, tool in enumerate(task.get("tools") or []):
                if not isinstance(tool, dict) or tool.get("type") != "rectangle":
                    tool_type = tool.get("type") if isinstance(tool, dict) else tool
                    errors.append(f"{where}: task {key}: tool {i} is a {tool_type!r} tool; Chorus draws rectangles only")
                    continue
                low, high = _count(tool.get("min"), 0), _count(tool.get("max"), DEFAULT_TOOL_MAX)
                if low is None or high is None:
                    errors.append(f"{where}: task {key}: tool {i}: min and max must be whole numbers")
                    continue
                if tool.get("details"):
                    translation.warnings.append(f"task {key}: tool {i}: its sub-questions (details) are dropped")
                tools.append({"type": "rectangle", "label": _text(workflow, tool.get("label")) or f"Tool {i}",
                              "min": max(low, 0), "max": min(high, MAX_MARKS_CEILING)})
            chorus = {"type": "drawing", "instruction": _text(workflow, task.get("instruction")) or key,
                      "tools": tools, "next": task.get("next") or None}
        else:
            errors.append(f"{where}: task {key} is a {kind!r} task, which Chorus cannot run "
                          "(single, multiple, drawing with rectangles, shortcut)")
            continue
        if task.get("help"):
            chorus["help"] = _text(workflow, task.get("help"))
        tasks[key] = chorus
    # Links to a dropped shortcut task cannot exist (shortcuts hang off "unlinkedTask"); any other
    # link to a missing task is reported by the validator below.
    first = workflow.first_task or ("T0" if "T0" in tasks else "")
    if not first:
        errors.append(f"{where}: first_task is empty and there is no task T0")
    if errors:
        raise ZooniverseError(errors)
    translation.tree = {"first_task": first, "tasks": tasks}
    problems = validate_task_tree(translation.tree)
    if problems:
        raise ZooniverseError([f"{where}: the translated task tree is not valid: {p}" for p in problems])
    return translation


def _answer_index(task: dict, labels: list[str], value: Any) -> int | None:
    """An answer given as its index (Panoptes' usual form) or as its label (some exports)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        if value.strip().isdigit() and value.strip() not in labels:
            return int(value)
        matches = [i for i, label in enumerate(labels) if label == value]
        if len(matches) == 1:
            return matches[0]
    return None


def translate_annotations(
    translation: Translation, label_sets: dict[str, list[str]], annotations: list[Any]
) -> tuple[list[dict], list[str]]:
    """Panoptes annotations into Chorus's ``[{task, value}]`` (answer indices, rectangle marks).

    Returns (annotations, problems); the result still has to pass ``validate_annotations``.
    """
    tasks = translation.tree["tasks"]
    out: list[dict] = []
    for index, annotation in enumerate(annotations):
        if not isinstance(annotation, dict) or not isinstance(annotation.get("task"), str):
            return [], [f"annotation {index} is not an object with a task"]
        key, value = annotation["task"], annotation.get("value")
        if key in translation.dropped_tasks:
            continue
        task = tasks.get(key)
        if task is None:
            return [], [f"annotation {index}: task {key!r} is not in the workflow"]
        if task["type"] == "single":
            answer = _answer_index(task, label_sets[key], value)
            if answer is None:
                return [], [f"annotation {index}: task {key}: {value!r} is not one of its answers"]
            out.append({"task": key, "value": answer})
        elif task["type"] == "multiple":
            values = value if isinstance(value, list) else []
            answers = [_answer_index(task, label_sets[key], v) for v in values]
            if not isinstance(value, list) or None in answers:
                return [], [f"annotation {index}: task {key}: {value!r} is not a list of its answers"]
            out.append({"task": key, "value": answers})
        else:
            if not isinstance(value, list):
                return [], [f"annotation {index}: task {key}: a drawing needs a list of marks"]
            marks = []
            for i, mark in enumerate(value):
                if not isinstance(mark, dict) or any(name not in mark for name in ("tool", "x", "y", "width", "height")):
                    return [], [f"annotation {index}: task {key}: mark {i} is not a rectangle (tool, x, y, width, height)"]
                marks.append({name: mark[name] for name in ("tool", "x", "y", "width", "height")})
            out.append({"task": key, "value": marks})
    return out, []


# --- reading the classification export -------------------------------------------------------------------


def _created_at(raw: str) -> datetime | None:
    raw = (raw or "").strip()
    for pattern in ("%Y-%m-%d %H:%M:%S UTC", "%Y-%m-%d %H:%M:%S.%f UTC"):
        try:
            return datetime.strptime(raw, pattern).replace(tzinfo=UTC)
        except ValueError:
            continue
    try:
        moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _iso_moment(raw: Any) -> datetime | None:
    if not isinstance(raw, str):
        return None
    try:
        moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _natural_size(metadata: dict) -> tuple[int, int] | None:
    """The first frame's natural size, as the classifier measured it (``subject_dimensions``)."""
    dimensions = metadata.get("subject_dimensions")
    if isinstance(dimensions, list) and dimensions and isinstance(dimensions[0], dict):
        width, height = dimensions[0].get("naturalWidth"), dimensions[0].get("naturalHeight")
        if isinstance(width, int | float) and isinstance(height, int | float) and width >= 1 and height >= 1:
            return min(int(width), MAX_PLACEHOLDER_SIDE), min(int(height), MAX_PLACEHOLDER_SIDE)
    return None


def _volunteer_key(row: dict[str, str], metadata: dict) -> str | None:
    """A Panoptes user id, else the anonymised IP of a not-logged-in volunteer, else its session."""
    user_id = (row.get("user_id") or "").strip()
    if user_id:
        return f"user:{user_id}"
    anonymous = (row.get("user_ip") or "").strip() or (row.get("user_name") or "").strip()
    if anonymous:
        return f"anonymous:{anonymous}"
    session = metadata.get("session")
    return f"session:{session}" if isinstance(session, str) and session else None


def _kept_metadata(metadata: dict) -> dict:
    if len(json.dumps(metadata)) <= MAX_METADATA_BYTES:
        return metadata
    return {k: metadata[k] for k in KEPT_METADATA if k in metadata}


def _find_image(images: Path | None, external_id: str, metadata: dict) -> Path | None:
    """An image named by the subject id (``<id>.png`` …) or by a metadata value (a file name)."""
    if images is None:
        return None
    for suffix in IMAGE_SUFFIXES:
        for candidate in (images / f"{external_id}{suffix}", images / f"{external_id}{suffix.upper()}"):
            if candidate.is_file():
                return candidate
    for value in metadata.values():
        if isinstance(value, str) and value and Path(value).name == value and (images / value).is_file():
            return images / value
    return None


def _image_size(path: Path, where: str) -> tuple[int, int]:
    try:
        with Image.open(path) as image:
            image.verify()
        with Image.open(path) as image:
            return image.size
    except (UnidentifiedImageError, OSError) as error:
        raise ZooniverseError([f"{where}: {path.name} is not a readable image ({error})"]) from error


def plan_import(
    workflows_csv: Path,
    classifications_csv: Path,
    workflow_id: int | None = None,
    version: str | None = None,
    images: Path | None = None,
    existing_sizes: Callable[[int], dict[str, tuple[int, int]]] | None = None,
) -> ImportPlan:
    """Read and check both exports completely; raise ZooniverseError listing every bad row.

    ``existing_sizes(workflow_id)`` gives the image sizes of subjects imported before, by external id.
    """
    workflow_rows = read_workflow_export(workflows_csv)
    name = classifications_csv.name
    raw_rows = list(_rows(classifications_csv, CLASSIFICATION_COLUMNS))
    ids = {(row.get("workflow_id") or "").strip() for _, row in raw_rows}
    if workflow_id is None:
        candidates = ids or {str(w.workflow_id) for w in workflow_rows}
        if len(candidates) != 1:
            raise ZooniverseError([f"{name}: classifications of several workflows ({', '.join(sorted(candidates))}); "
                                   "choose one with --workflow-id"])
        only = candidates.pop()
        if not only.isdigit():
            raise ZooniverseError([f"{name}: workflow_id {only!r} is not a whole number"])
        workflow_id = int(only)
    chosen_rows = [(line, row) for line, row in raw_rows if (row.get("workflow_id") or "").strip() == str(workflow_id)]
    skipped_workflows = len(raw_rows) - len(chosen_rows)
    known = {w.version: w for w in workflow_rows if w.workflow_id == workflow_id}
    if not known:
        raise ZooniverseError([f"{workflows_csv.name}: no row of workflow {workflow_id}"])
    present: dict[Version, int] = {}
    for line, row in chosen_rows:
        parsed = parse_version(row.get("workflow_version") or "")
        if parsed is None:
            raise ZooniverseError([f"{name}: line {line}: workflow_version {row.get('workflow_version')!r} "
                                   "is not major.minor"])
        present.setdefault(parsed, line)
    if not present:
        raise ZooniverseError([f"{name}: no classification of workflow {workflow_id}"])
    if version is None:
        wanted = {max(present)}
    else:
        major, _, minor = version.partition(".")
        if not major.isdigit() or (minor and not minor.isdigit()):
            raise ZooniverseError([f"--version {version!r}: give major.minor (16.55) or a major version (16)"])
        wanted = {v for v in present if v[0] == int(major) and (not minor or v[1] == int(minor))}
        if not wanted:
            raise ZooniverseError([f"{name}: no classification of workflow {workflow_id} version {version} "
                                   f"(present: {', '.join(version_text(v) for v in sorted(present))})"])
    unknown = sorted(v for v in wanted if v not in known)
    if unknown:
        raise ZooniverseError([
            f"{name}: line {present[v]}: classifications of workflow {workflow_id} version {version_text(v)}, but "
            f"{workflows_csv.name} has no such version (it has {', '.join(version_text(k) for k in sorted(known))})"
            for v in unknown
        ])
    workflow = known[max(wanted)]
    structures = {json.dumps(known[v].tasks, sort_keys=True) for v in wanted}
    if len(structures) > 1:
        raise ZooniverseError([f"{workflows_csv.name}: the versions chosen ({', '.join(version_text(v) for v in sorted(wanted))}) "
                               "have different tasks; choose one with --version major.minor"])
    translation = translate_tasks(workflow)
    # Labels by task, for exports that give answers as their labels: those of every chosen version.
    label_sets: dict[Version, dict[str, list[str]]] = {
        v: {key: [_text(known[v], a.get("label")) if isinstance(a, dict) else "" for a in known[v].tasks[key].get("answers") or []]
            for key, task in translation.tree["tasks"].items() if task["type"] != "drawing"}
        for v in wanted
    }
    skipped_versions: dict[str, int] = {}
    problems: list[str] = []
    parsed_rows: list[tuple[int, dict[str, str], Version, dict, dict, list, str]] = []
    subjects: dict[str, PlannedSubject] = {}
    natural: dict[str, tuple[int, int]] = {}
    seen_ids: dict[int, int] = {}
    for line, row in chosen_rows:
        row_version = parse_version(row["workflow_version"])
        assert row_version is not None
        if row_version not in wanted:
            skipped_versions[version_text(row_version)] = skipped_versions.get(version_text(row_version), 0) + 1
            continue
        where = f"{name}: line {line}"
        try:
            metadata = _json(row.get("metadata"), {}, dict, where, "metadata")
            subject_data = _json(row.get("subject_data"), {}, dict, where, "subject_data")
            annotations = _json(row.get("annotations"), None, list, where, "annotations")
        except ZooniverseError as error:
            problems.extend(error.problems)
            continue
        classification_id = (row.get("classification_id") or "").strip()
        subject_ids = [s.strip() for s in (row.get("subject_ids") or "").split(";") if s.strip()]
        if not classification_id.isdigit():
            problems.append(f"{where}: classification_id {classification_id!r} is not a whole number")
            continue
        if int(classification_id) in seen_ids:
            problems.append(f"{where}: classification {classification_id} appears twice (first on line "
                            f"{seen_ids[int(classification_id)]})")
            continue
        seen_ids[int(classification_id)] = line
        if len(subject_ids) != 1:
            problems.append(f"{where}: subject_ids must name exactly one subject (Chorus classifies one at a time)")
            continue
        if annotations is None:
            problems.append(f"{where}: annotations are empty")
            continue
        external_id = subject_ids[0]
        subject_metadata = subject_data.get(external_id)
        if not isinstance(subject_metadata, dict):
            problems.append(f"{where}: subject_data has no object for subject {external_id}")
            continue
        size = _natural_size(metadata)
        if size is not None:
            old = natural.get(external_id, (0, 0))
            natural[external_id] = (max(old[0], size[0]), max(old[1], size[1]))
        if external_id not in subjects:
            clean = {k: v for k, v in subject_metadata.items() if k != "retired"}
            subjects[external_id] = PlannedSubject(external_id, clean, None, PLACEHOLDER_SIZE, line)
        parsed_rows.append((line, row, row_version, metadata, subject_data, annotations, external_id))
    sizes = existing_sizes(workflow_id) if existing_sizes is not None else {}
    for external_id, subject in subjects.items():
        if external_id in sizes:
            subject.size = sizes[external_id]
            continue
        subject.image = _find_image(images, external_id, subject.metadata)
        if subject.image is not None:
            try:
                subject.size = _image_size(subject.image, f"{name}: line {subject.line}")
            except ZooniverseError as error:
                problems.extend(error.problems)
        else:
            subject.size = natural.get(external_id, PLACEHOLDER_SIZE)
    classifications: list[PlannedClassification] = []
    for line, row, row_version, metadata, _subject_data, annotations, external_id in parsed_rows:
        where = f"{name}: line {line}"
        translated, errors = translate_annotations(translation, label_sets[row_version], annotations)
        if not errors:
            translated, errors = validate_annotations(translation.tree, translated, subjects[external_id].size)
        if errors:
            problems.append(f"{where}: classification {row['classification_id']}: the annotations do not fit the "
                            f"workflow: {'; '.join(errors)}")
            continue
        created = _created_at(row.get("created_at") or "")
        if created is None:
            problems.append(f"{where}: created_at {row.get('created_at')!r} is not a date and time")
            continue
        volunteer = _volunteer_key(row, metadata)
        if volunteer is None:
            problems.append(f"{where}: no user_id, user_ip, user_name or session to tell the volunteer by")
            continue
        started, finished = _iso_moment(metadata.get("started_at")), _iso_moment(metadata.get("finished_at"))
        if started and finished and finished < started:
            started = finished = None
        classifications.append(
            PlannedClassification(
                line=line, classification_id=int(row["classification_id"]), subject_external_id=external_id,
                volunteer_key=volunteer, user_id=(row.get("user_id") or "").strip(),
                user_name=(row.get("user_name") or "").strip(), created_at=created, started_at=started,
                finished_at=finished, annotations=translated,
                metadata={
                    "zooniverse": {
                        "classification_id": int(row["classification_id"]), "user_name": row.get("user_name") or "",
                        "user_id": (row.get("user_id") or "").strip(), "user_ip": row.get("user_ip") or "",
                        "volunteer": volunteer, "workflow_id": workflow_id,
                        "workflow_version": row["workflow_version"].strip(), "created_at": row.get("created_at") or "",
                    },
                    "panoptes": _kept_metadata(metadata),
                },
            )
        )
    if problems:
        extra = len(problems) - MAX_REPORTED_ERRORS
        raise ZooniverseError(problems[:MAX_REPORTED_ERRORS] + ([f"... and {extra} more"] if extra > 0 else []))
    classifications.sort(key=lambda c: (c.created_at, c.classification_id))
    return ImportPlan(
        workflow=workflow, translation=translation, versions=sorted(wanted), subjects=subjects,
        classifications=classifications, skipped_versions=skipped_versions, skipped_workflows=skipped_workflows,
        warnings=list(translation.warnings),
    )


# --- writing -------------------------------------------------------------------------------------------------


def chorus_workflow_name(workflow: PanoptesWorkflow, versions: list[Version]) -> str:
    label = version_text(versions[0]) if len(versions) == 1 else f"{versions[0][0]}.x"
    return f"{workflow.name} (Zooniverse workflow {workflow.workflow_id} v{label})"[:200]


def chorus_retirement(workflow: PanoptesWorkflow, tree: dict) -> dict:
    """Chorus's consensus retirement, with Panoptes' ``classification_count`` as the budget."""
    if workflow.retirement.get("criteria") != "classification_count":
        return {}
    count = _count((workflow.retirement.get("options") or {}).get("count"), 0)
    if not count or count < 1:
        return {}
    budget = min(count, 10_000)
    return {"budget": budget, "min": min(3, budget)}


def placeholder_image(external_id: str, size: tuple[int, int]) -> ContentFile:
    """A grey PNG of the subject's size naming the Zooniverse subject (no image came with the export)."""
    image = Image.new("RGB", size, (96, 96, 96))
    ImageDraw.Draw(image).text((10, 10), f"Zooniverse subject {external_id}", fill=(230, 230, 230))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return ContentFile(buffer.getvalue())


def _volunteers(project: Project, keys: set[str]) -> dict[str, Any]:
    """A Chorus volunteer per Panoptes volunteer: a user ``zooniverse-<user id>`` for a signed-in
    one; for an anonymous one, the anonymous volunteer an earlier import created (found through its
    classifications' metadata), or a new one."""
    from classifications.models import Classification, Volunteer
    from classifications.services import volunteer_for_user

    user_model = get_user_model()
    out: dict[str, Any] = {}
    anonymous = {key for key in keys if not key.startswith("user:")}
    if anonymous:
        known = (
            Classification.objects.filter(workflow__project=project, volunteer__user__isnull=True,
                                          idempotency_key__startswith=KEY_PREFIX)
            .values_list("metadata__zooniverse__volunteer", "volunteer_id").distinct()
        )
        found = {key: volunteer_id for key, volunteer_id in known if key in anonymous}
        volunteers = Volunteer.objects.in_bulk(set(found.values()))
        out.update({key: volunteers[volunteer_id] for key, volunteer_id in found.items()})
    for key in sorted(keys):
        if key in out:
            continue
        if key.startswith("user:"):
            user, created = user_model.objects.get_or_create(username=f"{USERNAME_PREFIX}{key.removeprefix('user:')}"[:150])
            if created:
                user.set_unusable_password()
                user.save(update_fields=["password"])
            out[key] = volunteer_for_user(user)
        else:
            out[key] = Volunteer.objects.create()
    return out


def _store_classifications(workflow: Workflow, plan: ImportPlan, subject_ids: dict[str, int],
                           volunteers: dict[str, Any], report: ZooniverseReport) -> None:
    from classifications.models import Classification
    from classifications.services import ClassificationRejected, submit_classifications

    done = set(Classification.objects.filter(workflow=workflow, idempotency_key__startswith=KEY_PREFIX)
               .values_list("idempotency_key", flat=True))
    batch: list[PlannedClassification] = []

    def flush() -> None:
        if not batch:
            return
        volunteer = volunteers[batch[0].volunteer_key]
        items = [
            {"workflow": workflow.pk, "subject": subject_ids[c.subject_external_id], "annotations": c.annotations,
             "idempotency_key": f"{KEY_PREFIX}{c.classification_id}", "started_at": c.started_at,
             "finished_at": c.finished_at, "metadata": c.metadata}
            for c in batch
        ]
        try:
            results = submit_classifications(volunteer, items)
        except ClassificationRejected as rejected:
            lines = ", ".join(str(c.line) for c in batch)
            raise ZooniverseError([f"lines {lines}: Chorus refused the classifications: {rejected.errors}"]) from None
        stored = []
        for planned, result in zip(batch, results, strict=True):
            if result.created:
                result.classification.created_at = planned.created_at  # Panoptes' time, not the import's
                stored.append(result.classification)
                report.classifications_imported += 1
            else:
                report.classifications_existing += 1
        Classification.objects.bulk_update(stored, ["created_at"])
        batch.clear()

    for planned in plan.classifications:
        if f"{KEY_PREFIX}{planned.classification_id}" in done:
            report.classifications_existing += 1
            continue
        # One volunteer per batch, each subject once: a batch is checked before any of it is written,
        # so a volunteer's second look at a subject must come after the first is stored.
        if batch and (batch[0].volunteer_key != planned.volunteer_key or len(batch) >= BATCH
                      or planned.subject_external_id in {c.subject_external_id for c in batch}):
            flush()
        batch.append(planned)
    flush()


def import_zooniverse(
    project_slug: str,
    workflows_csv: Path,
    classifications_csv: Path,
    workflow_id: int | None = None,
    version: str | None = None,
    images: Path | None = None,
    aggregate: bool = True,
) -> ZooniverseReport:
    """Import a Panoptes workflow and its classifications (see the module docstring); idempotent."""
    from live.services import apply_pending

    if images is not None and not images.is_dir():
        raise ZooniverseError([f"image folder {images} not found"])
    plan = plan_import(workflows_csv, classifications_csv, workflow_id, version, images,
                       existing_sizes=lambda chosen: _existing_sizes(project_slug, chosen))
    report = ZooniverseReport(project=project_slug, panoptes_workflow_id=plan.workflow.workflow_id,
                              versions=[version_text(v) for v in plan.versions], skipped_versions=plan.skipped_versions,
                              skipped_workflows=plan.skipped_workflows, warnings=plan.warnings)
    name = chorus_workflow_name(plan.workflow, plan.versions)
    with transaction.atomic():
        project, _ = Project.objects.get_or_create(
            slug=project_slug,
            defaults={"title": plan.workflow.name, "description": f"Imported from Zooniverse workflow {plan.workflow.workflow_id}."},
        )
        workflow = project.workflows.filter(name=name).first()
        if workflow is None:
            from projects.services import create_workflow

            try:
                workflow = create_workflow(project, name, plan.translation.tree,
                                           retirement=chorus_retirement(plan.workflow, plan.translation.tree))
            except ValueError as error:
                raise ZooniverseError([f"the workflow cannot be created: {error}"]) from error
        elif workflow.tasks != plan.translation.tree:
            raise ZooniverseError([f"workflow {name!r} exists in project {project_slug} with a different task tree"])
        subject_set, _ = SubjectSet.objects.get_or_create(project=project, name=subject_set_name(plan.workflow.workflow_id))
        subject_ids = _write_subjects(subject_set, plan, report)
        from projects.services import link_subject_set

        link_subject_set(workflow, subject_set)
        volunteers = _volunteers(project, {c.volunteer_key for c in plan.classifications})
        _store_classifications(workflow, plan, subject_ids, volunteers, report)
    report.workflow_id, report.workflow_name = workflow.pk, workflow.name
    if aggregate:
        while True:
            applied = apply_pending(workflow.pk)
            report.applied += applied.applied
            report.retired += applied.retired
            if not applied.more or applied.locked_out:
                break
    return report


def _existing_sizes(project_slug: str, workflow_id: int) -> dict[str, tuple[int, int]]:
    """Sizes of the first images of subjects imported before (their boxes are checked against them)."""
    images = SubjectImage.objects.filter(
        subject__subject_set__project__slug=project_slug, subject__subject_set__name=subject_set_name(workflow_id),
        position=0,
    )
    return {external_id: (width, height) for external_id, width, height in
            images.values_list("subject__external_id", "width", "height")}


def _write_subjects(subject_set: SubjectSet, plan: ImportPlan, report: ZooniverseReport) -> dict[str, int]:
    from projects.services import add_subject_image

    existing = dict(subject_set.subjects.values_list("external_id", "id"))
    for external_id, planned in plan.subjects.items():
        if external_id in existing:
            report.subjects_existing += 1
            continue
        subject = Subject.objects.create(subject_set=subject_set, external_id=external_id, metadata=planned.metadata)
        if planned.image is not None:
            with open(planned.image, "rb") as handle:
                add_subject_image(subject, 0, planned.image.name, File(handle))
        else:
            add_subject_image(subject, 0, f"zooniverse-{external_id}.png", placeholder_image(external_id, planned.size))
        existing[external_id] = subject.pk
        report.subjects_created += 1
    return existing


def subject_set_name(workflow_id: int) -> str:
    """The subject set that holds a Panoptes workflow's subjects in its Chorus project."""
    return f"Zooniverse workflow {workflow_id}"
