"""The subject manifest: one CSV format for ``manage.py import_subjects`` and the project builder's upload.

Columns: ``image`` (one file name, or several separated by ';'), optional ``external_id`` (the
subject's id in the scientist's catalogue; without the column, the first image's file name),
optional ``gold.<task key>`` (an answer index, or JSON: a list of indices for a multiple-answer
question, a list of boxes for a drawing task), and any other column as metadata (names starting with
'#' or '!' are hidden from volunteers, as on Zooniverse).

``parse_manifest`` reads every line and collects every problem, each named by its line, so that a
scientist fixes the file in one go; callers store nothing unless there is none.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from PIL import Image, UnidentifiedImageError

MAX_REPORTED = 50  # problems listed; the rest are counted


class ManifestError(ValueError):
    """Manifest problems, each with the line it was found on."""

    def __init__(self, problems: str | list[str]) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


@dataclass
class ManifestRow:
    line: int
    external_id: str
    images: list[str]
    gold: dict | None
    metadata: dict[str, str]


@dataclass
class ParsedManifest:
    rows: list[ManifestRow] = field(default_factory=list)  # the lines without a problem
    problems: list[str] = field(default_factory=list)
    named: set[str] = field(default_factory=set)  # every image name on any line


def _gold(row: dict[str, str], line: int, problems: list[str]) -> dict | None:
    gold: dict = {}
    for column, raw in row.items():
        if column.startswith("gold.") and raw not in ("", None):
            try:
                gold[column.removeprefix("gold.")] = json.loads(raw)
            except json.JSONDecodeError:
                problems.append(f"line {line}: column {column}: {raw!r} is not a number or JSON")
    return gold or None


def parse_manifest(
    lines: Iterable[str],
    image_problem: Callable[[str], str | None],
    gold_problems: Callable[[dict, list[str]], list[str]] | None = None,
) -> ParsedManifest:
    """Every row and every problem of a manifest. ``image_problem(name)`` says what is wrong with an
    image name (None when it is there); ``gold_problems(gold, images)`` checks a row's gold against a
    workflow's tree when there is one."""
    parsed = ParsedManifest()
    reader = csv.DictReader(lines)
    try:
        header = reader.fieldnames or []
        _read_rows(reader, header, parsed, image_problem, gold_problems)
    except csv.Error as error:
        parsed.problems.append(f"line {reader.line_num}: not readable as CSV ({error})")
    return parsed


def _read_rows(
    reader: csv.DictReader,
    header: list[str],
    parsed: ParsedManifest,
    image_problem: Callable[[str], str | None],
    gold_problems: Callable[[dict, list[str]], list[str]] | None,
) -> None:
    if "image" not in header:
        parsed.problems.append("line 1: the header lacks column(s) image")
        return
    if len(set(header)) != len(header):
        parsed.problems.append("line 1: a column name appears twice in the header")
        return
    seen: dict[str, int] = {}
    for line, row in enumerate(reader, start=2):
        problems: list[str] = []
        if None in row:
            parsed.problems.append(f"line {line}: more fields than the header has columns")
            continue
        if any("\x00" in (value or "") for value in row.values()):
            parsed.problems.append(f"line {line}: a NUL character (the file is not CSV text)")
            continue
        images = [name.strip() for name in (row.get("image") or "").split(";") if name.strip()]
        parsed.named.update(images)
        if not images:
            problems.append(f"line {line}: no image named")
        for name in images:
            problem = image_problem(name)
            if problem:
                problems.append(f"line {line}: image {name!r} {problem}")
        external_id = (row.get("external_id") or "").strip() if "external_id" in header else (images[0] if images else "")
        if not external_id:
            problems.append(f"line {line}: external_id is empty")
        elif external_id in seen:
            problems.append(f"line {line}: external_id {external_id!r} appears twice (line {seen[external_id]} too)")
        else:
            seen[external_id] = line
        gold = _gold(row, line, problems)
        if gold and gold_problems is not None and images:
            problems.extend(f"line {line}: {problem}" for problem in gold_problems(gold, images))
        metadata = {k: v for k, v in row.items() if k not in {"external_id", "image"} and not k.startswith("gold.")}
        parsed.problems.extend(problems)
        if not problems:
            parsed.rows.append(ManifestRow(line, external_id, images, gold, metadata))


def capped(problems: list[str]) -> list[str]:
    """At most MAX_REPORTED problems, and how many more there are."""
    if len(problems) <= MAX_REPORTED:
        return problems
    return [*problems[:MAX_REPORTED], f"... and {len(problems) - MAX_REPORTED} more"]


def read_manifest_file(manifest: Path, image_dir: Path) -> list[ManifestRow]:
    """The manifest of a folder of images (``manage.py import_subjects``); ManifestError lists its problems."""

    def image_problem(name: str) -> str | None:
        return None if Path(name).name == name and (image_dir / name).is_file() else f"not found in {image_dir}"

    with open(manifest, newline="", encoding="utf-8-sig") as handle:
        parsed = parse_manifest(handle, image_problem)
    if parsed.problems:
        raise ManifestError(capped(parsed.problems))
    return parsed.rows


# What browsers show: a subject image in another format (TIFF, BMP, ...) would never load for volunteers.
WEB_IMAGE_FORMATS = {"PNG": "PNG", "JPEG": "JPEG", "GIF": "GIF", "WEBP": "WebP"}


def inspect_image(handle: BinaryIO) -> tuple[tuple[int, int] | None, str | None]:
    """(size in pixels, None) for an image browsers can show, else (None, what is wrong with it):
    Pillow must read it whole and know it as PNG, JPEG, GIF or WebP. The handle is left at its start."""
    try:
        with Image.open(handle) as image:
            kind, size = image.format, image.size
            image.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        return None, f"is not an image Pillow can read ({error})"
    finally:
        handle.seek(0)
    if kind not in WEB_IMAGE_FORMATS:
        return None, f"is a {kind} image; browsers show {', '.join(WEB_IMAGE_FORMATS.values())}"
    return size, None
