"""Reading answer and truth tables from CSV, with every malformed row named by line number.

Bad input is an error, never a silent figure: a file with no data rows (header only, empty, or
blank lines only) raises ``CsvError`` naming the file ("no answers", "no truth rows"), and a row
that cannot be read raises it naming the line. Files are read as UTF-8 (a byte-order mark is
allowed); blank lines are skipped wherever they are.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

SUBJECT_HEADERS = ("question", "task", "subject")
WORKER_HEADERS = ("worker", "volunteer", "user")
ANSWER_HEADERS = ("answer", "label", "value")
TRUTH_HEADERS = ("truth", "gold", "label", "answer")


class CsvError(ValueError):
    """A CSV file that cannot be read; ``problems`` lists (line number, message).

    Each problem reads ``path:line: message``, or ``path: message`` where the line number is
    ``None`` (a problem with the whole file, such as no rows at all); several are listed
    under a count.
    """

    def __init__(self, path: str, problems: list[tuple[int | None, str]]) -> None:
        self.path = path
        self.problems = problems
        if len(problems) == 1:
            line, msg = problems[0]
            super().__init__(f"{path}: {msg}" if line is None else f"{path}:{line}: {msg}")
            return
        shown = "\n".join(f"{path}:{line}: {msg}" if line is not None else f"{path}: {msg}"
                          for line, msg in problems[:20])
        more = f"\n... and {len(problems) - 20} more" if len(problems) > 20 else ""
        super().__init__(f"{len(problems)} malformed row(s) in {path}:\n{shown}{more}")


@dataclass
class AnswerTable:
    """Answers in file order; ``lines`` holds each answer's line in the file (if read from one)."""

    subjects: np.ndarray  # str ids
    workers: np.ndarray  # str ids
    answers: np.ndarray  # int64
    lines: np.ndarray | None = None  # int64 line numbers, None when not read from a file
    path: str | None = None


@dataclass
class TruthTable:
    """Truth labels by question, with the line each came from."""

    labels: dict[str, int]
    lines: dict[str, int] = field(default_factory=dict)
    path: str | None = None


def _column(header: list[str], names: tuple[str, ...], path: str, line: int) -> int:
    lowered = [h.strip().lower() for h in header]
    for name in names:
        if name in lowered:
            return lowered.index(name)
    raise CsvError(path, [(line, f"header needs one of the columns {', '.join(names)}; "
                                 f"got {', '.join(header) or 'nothing'}")])


def _parse_label(text: str) -> int:
    value = int(text.strip())
    if value < 0:
        raise ValueError("negative")
    return value


def first_undecodable_line(path: str) -> int | None:
    """The first line of ``path`` that is not UTF-8 (None if every line decodes)."""
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError:
                return number
    return None


def _rows(path: str, what: str, header: str) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) for the header (first) and each non-blank row after it.

    Raises ``CsvError``: the file cannot be opened or decoded, the CSV is malformed (an
    unclosed quote, a NUL byte), or there is no header (empty or blank lines only).
    """
    try:
        handle = open(path, newline="", encoding="utf-8-sig")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise CsvError(path, [(None, f"cannot read: {exc.strerror or exc}")]) from None
    with handle:
        reader = csv.reader(handle)
        seen_header = False
        try:
            for row in reader:
                if not row or all(not cell.strip() for cell in row):
                    continue
                seen_header = True
                yield reader.line_num, row
        except csv.Error as exc:
            raise CsvError(path, [(reader.line_num, f"malformed CSV: {exc}")]) from None
        except UnicodeDecodeError:
            raise CsvError(path, [(first_undecodable_line(path), "not UTF-8 text")]) from None
        if not seen_header:
            raise CsvError(path, [(None, f"no {what}: the file is empty or blank "
                                         f"(expected a header {header})")])


def read_answers(path: str | Path) -> AnswerTable:
    """Read ``question,worker,answer`` rows (answers are integers 0..K-1) in file order.

    Raises ``CsvError`` for a malformed row (all of them listed by line) and for a file with
    no answers (``path: no answers``).
    """
    path = str(path)
    problems: list[tuple[int | None, str]] = []
    subjects: list[str] = []
    workers: list[str] = []
    answers: list[int] = []
    lines: list[int] = []
    rows = _rows(path, "answers", "question,worker,answer")
    header_line, header = next(rows)
    si = _column(header, SUBJECT_HEADERS, path, header_line)
    wi = _column(header, WORKER_HEADERS, path, header_line)
    ai = _column(header, ANSWER_HEADERS, path, header_line)
    width = len(header)
    for line, row in rows:
        if len(row) != width:
            problems.append((line, f"expected {width} fields, got {len(row)}"))
            continue
        subject, worker, answer = row[si].strip(), row[wi].strip(), row[ai]
        if not subject or not worker:
            problems.append((line, "empty question or worker id"))
            continue
        try:
            value = _parse_label(answer)
        except ValueError:
            problems.append((line, f"answer {answer!r} is not a non-negative integer"))
            continue
        subjects.append(subject)
        workers.append(worker)
        answers.append(value)
        lines.append(line)
    if problems:
        raise CsvError(path, problems)
    if not answers:
        raise CsvError(path, [(None, "no answers: the file has a header and no rows")])
    return AnswerTable(np.array(subjects, dtype=str), np.array(workers, dtype=str),
                       np.array(answers, dtype=np.int64), np.array(lines, dtype=np.int64),
                       path)


def read_truth_table(path: str | Path) -> TruthTable:
    """Read ``question,truth`` rows, keeping each label's line.

    Raises ``CsvError`` for a malformed row (wrong field count, empty question id, a label
    that is not a non-negative integer, a question given two different labels) and for a
    file with no rows. A question repeated with the same label is accepted.
    """
    path = str(path)
    problems: list[tuple[int | None, str]] = []
    truth: dict[str, int] = {}
    lines: dict[str, int] = {}
    rows = _rows(path, "truth rows", "question,truth")
    header_line, header = next(rows)
    si = _column(header, SUBJECT_HEADERS, path, header_line)
    ti = _column(header, TRUTH_HEADERS, path, header_line)
    width = len(header)
    for line, row in rows:
        if len(row) != width:
            problems.append((line, f"expected {width} fields, got {len(row)}"))
            continue
        subject = row[si].strip()
        if not subject:
            problems.append((line, "empty question id"))
            continue
        try:
            label = _parse_label(row[ti])
        except ValueError:
            problems.append((line, f"truth {row[ti]!r} is not a non-negative integer"))
            continue
        if subject in truth:
            if truth[subject] != label:
                problems.append((line, f"question {subject!r} has truth {label} here but "
                                       f"{truth[subject]} at line {lines[subject]}"))
            continue
        truth[subject] = label
        lines[subject] = line
    if problems:
        raise CsvError(path, problems)
    if not truth:
        raise CsvError(path, [(None, "no truth rows: the file has a header and no rows")])
    return TruthTable(truth, lines, path)


def read_truth(path: str | Path) -> dict[str, int]:
    """Read ``question,truth`` rows into a dict (see ``read_truth_table`` for the checks)."""
    return read_truth_table(path).labels
