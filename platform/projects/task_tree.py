"""The workflow task tree: its JSON schema, and the validation of volunteers' annotations against it.

A tree is ``{"first_task": key, "tasks": {key: task}}``. Task types:
- ``single``: ``question``, ``answers`` (each ``label``, optional ``next`` and ``help``); branches per answer.
- ``multiple``: ``question``, ``answers``, one ``next`` for all.
- ``drawing``: ``instruction``, ``tools`` (each ``type: "rectangle"``, ``label``, ``min``, ``max``), one ``next``.
A question may declare ``mirror_swaps``, ``[[i, j], ...]``: the answers that a mirror image of the subject
exchanges (GZ1's clockwise and anticlockwise spirals, ``[[1, 2]]`` after edge-on). The machine classifier
then predicts those answers swapped for a mirrored image instead of ignoring mirroring (``ml.model``);
answers not named are the same in a mirror image.
An annotation list must follow one path through the tree from ``first_task`` to an end; a subject's
gold answers (``gold_problems``) take the same values as the annotations of their tasks.
"""

from __future__ import annotations

import json
import re
from typing import Any

TASK_TYPES = {"single", "multiple", "drawing"}
TASK_KEY = re.compile(r"^[A-Za-z0-9_.-]{1,32}$")
MAX_TASKS = 50
MAX_ANSWERS = 30
MAX_MARKS_CEILING = 200  # no tool may allow more marks than this, whatever the workflow says
MAX_COORDINATE = 1e9  # box coordinates and sizes, in pixels: finite and at most this in size


def _next_keys(task: dict) -> list[str | None]:
    if task.get("type") == "single":
        return [answer.get("next") for answer in task.get("answers", [])]
    return [task.get("next")]


def validate_task_tree(tree: Any) -> list[str]:
    """Return the list of problems with a task tree (empty when it is valid)."""
    if not isinstance(tree, dict):
        return ["the task tree must be an object with first_task and tasks"]
    tasks = tree.get("tasks")
    if not isinstance(tasks, dict) or not tasks:
        return ["tasks must be a non-empty object keyed by task key"]
    if len(tasks) > MAX_TASKS:
        return [f"at most {MAX_TASKS} tasks"]
    errors: list[str] = []
    if tree.get("first_task") not in tasks:
        errors.append("first_task must name one of the tasks")
    for key, task in tasks.items():
        if not TASK_KEY.match(str(key)):
            errors.append(f"task key {key!r} must be 1-32 letters, digits, '_', '-' or '.'")
        if not isinstance(task, dict) or task.get("type") not in TASK_TYPES:
            errors.append(f"task {key}: type must be one of {sorted(TASK_TYPES)}")
            continue
        if task["type"] in {"single", "multiple"}:
            answers = task.get("answers")
            if not isinstance(task.get("question"), str) or not task["question"].strip():
                errors.append(f"task {key}: question text is required")
            if not isinstance(answers, list) or not 2 <= len(answers) <= MAX_ANSWERS:
                errors.append(f"task {key}: needs between 2 and {MAX_ANSWERS} answers")
                continue
            for i, answer in enumerate(answers):
                if not isinstance(answer, dict) or not isinstance(answer.get("label"), str):
                    errors.append(f"task {key}: answer {i} needs a label")
            if "mirror_swaps" in task:
                errors.extend(f"tasks.{key}.mirror_swaps: {problem}" for problem in _mirror_swap_errors(task["mirror_swaps"], len(answers)))
        else:
            if "mirror_swaps" in task:
                errors.append(f"tasks.{key}.mirror_swaps: only a question's answers can be swapped, not a drawing task's")
            tools = task.get("tools")
            if not isinstance(tools, list) or not tools:
                errors.append(f"task {key}: a drawing task needs at least one tool")
                continue
            for i, tool in enumerate(tools):
                if not isinstance(tool, dict) or tool.get("type") != "rectangle":
                    errors.append(f"task {key}: tool {i} must be a rectangle tool")
                    continue
                if not isinstance(tool.get("label"), str):
                    errors.append(f"task {key}: tool {i} needs a label")
                low, high = tool.get("min", 0), tool.get("max", 20)
                if not (isinstance(low, int) and isinstance(high, int) and 0 <= low <= high <= MAX_MARKS_CEILING):
                    errors.append(f"task {key}: tool {i} needs 0 <= min <= max <= {MAX_MARKS_CEILING}")
        for target in _next_keys(task):
            if target is not None and target not in tasks:
                errors.append(f"task {key}: next task {target!r} does not exist")
    if not errors:
        errors.extend(_cycle_errors(tree))
    return errors


def _mirror_swap_errors(swaps: Any, n_answers: int) -> list[str]:
    """What is wrong with a question's ``mirror_swaps`` (empty when nothing): a list of pairs of
    two different answer indices, no answer in two pairs (a mirror image exchanges answers two by two)."""
    if not isinstance(swaps, list):
        return ["must be a list of [i, j] answer pairs"]
    errors: list[str] = []
    seen: set[int] = set()
    for n, pair in enumerate(swaps):
        if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(i, int) and not isinstance(i, bool) for i in pair)):
            errors.append(f"pair {n} must be two answer indices [i, j]")
            continue
        i, j = pair
        if not (0 <= i < n_answers and 0 <= j < n_answers):
            errors.append(f"pair {n} {pair}: answer indices go from 0 to {n_answers - 1}")
        elif i == j:
            errors.append(f"pair {n} {pair}: an answer cannot be swapped with itself")
        elif {i, j} & seen:
            errors.append(f"pair {n} {pair}: answer {min({i, j} & seen)} is already in another pair")
        seen |= {i, j}
    return errors


def _cycle_errors(tree: dict) -> list[str]:
    """A classification must end: the tree may not loop back on itself."""
    tasks = tree["tasks"]
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(key: str) -> bool:
        state[key] = 1
        for target in _next_keys(tasks[key]):
            if target is None:
                continue
            if state.get(target) == 1 or (state.get(target) is None and visit(target)):
                return True
        state[key] = 2
        return False

    return ["the task tree has a cycle"] if visit(tree["first_task"]) else []


def question_tasks(tree: dict) -> dict[str, dict]:
    return {k: t for k, t in tree["tasks"].items() if t["type"] in {"single", "multiple"}}


def validate_annotations(
    tree: dict, annotations: Any, image_size: tuple[int, int] | None
) -> tuple[list[dict], list[str]]:
    """Check annotations against the tree; return (normalised annotations, errors).

    The annotations must walk the tree from ``first_task``, each answer choosing the next task,
    until a task with no next; boxes must lie inside the image and have positive size.
    """
    if not isinstance(annotations, list) or not annotations:
        return [], ["annotations must be a non-empty list of {task, value}"]
    tasks = tree["tasks"]
    errors: list[str] = []
    normalised: list[dict] = []
    expected: str | None = tree["first_task"]
    for index, annotation in enumerate(annotations):
        where = f"annotation {index}"
        if not isinstance(annotation, dict) or set(annotation) - {"task", "value"} or "task" not in annotation:
            errors.append(f"{where}: must be an object with exactly task and value")
            break
        key = annotation["task"]
        if not isinstance(key, str):  # a list or an object is not even hashable
            errors.append(f"{where}: task must be a task key (a string)")
            break
        if key not in tasks:
            errors.append(f"{where}: unknown task {key[:40]!r}")
            break
        if key != expected:
            errors.append(f"{where}: task {key!r} is not reachable here; the tree expects {expected!r}")
            break
        task, value = tasks[key], annotation.get("value")
        if task["type"] == "single":
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < len(task["answers"]):
                errors.append(f"{where}: task {key} needs one answer index from 0 to {len(task['answers']) - 1}")
                break
            expected = task["answers"][value].get("next")
        elif task["type"] == "multiple":
            if (
                not isinstance(value, list)
                or any(not isinstance(v, int) or isinstance(v, bool) for v in value)
                or any(not 0 <= v < len(task["answers"]) for v in value)
                or len(set(value)) != len(value)
            ):
                errors.append(f"{where}: task {key} needs a list of distinct answer indices")
                break
            value = sorted(value)
            expected = task.get("next")
        else:
            mark_errors = _validate_marks(task, value, image_size)
            if mark_errors:
                errors.extend(f"{where}: {message}" for message in mark_errors)
                break
            value = [
                {name: mark[name] for name in ("tool", "x", "y", "width", "height")} for mark in value
            ]
            expected = task.get("next")
        normalised.append({"task": key, "value": value})
    else:
        if expected is not None:
            errors.append(f"the classification stops before task {expected!r}")
    return normalised, errors


def _validate_marks(task: dict, marks: Any, image_size: tuple[int, int] | None) -> list[str]:
    if not isinstance(marks, list):
        return ["a drawing task needs a list of marks"]
    tools = task["tools"]
    counts = [0] * len(tools)
    for i, mark in enumerate(marks):
        if not isinstance(mark, dict) or set(mark) != {"tool", "x", "y", "width", "height"}:
            return [f"mark {i} must have exactly tool, x, y, width and height"]
        numbers = [mark[name] for name in ("x", "y", "width", "height")]
        # Compared, never converted: math.isfinite(10**400) raises OverflowError; NaN fails every comparison.
        if any(isinstance(v, bool) or not isinstance(v, int | float) or not -MAX_COORDINATE <= v <= MAX_COORDINATE for v in numbers):
            return [f"mark {i}: x, y, width and height must be finite numbers of at most {MAX_COORDINATE:.0e} in size"]
        tool = mark["tool"]
        if not isinstance(tool, int) or isinstance(tool, bool) or not 0 <= tool < len(tools):
            return [f"mark {i}: unknown tool {tool!r}"]
        x, y, width, height = numbers
        if width <= 0 or height <= 0:
            return [f"mark {i}: width and height must be positive"]
        if image_size is not None:
            image_width, image_height = image_size
            if x < 0 or y < 0 or x + width > image_width or y + height > image_height:
                return [f"mark {i}: the box lies outside the {image_width}x{image_height} image"]
        counts[tool] += 1
    problems = []
    for tool, count in zip(tools, counts, strict=True):
        low, high = tool.get("min", 0), tool.get("max", 20)
        if count > high:
            problems.append(f"too many marks for {tool['label']!r}: {count} > {high}")
        if count < low:
            problems.append(f"too few marks for {tool['label']!r}: {count} < {low}")
    return problems


def gold_problems(tree: dict, gold: dict, image_size: tuple[int, int] | None = None) -> list[str]:
    """What is wrong with a subject's gold answers for this tree (empty when nothing): each key names
    a task; a single-answer question takes one answer index, a multiple-answer one a list of distinct
    indices, a drawing task a list of boxes as volunteers draw them."""
    tasks = tree["tasks"]
    problems: list[str] = []
    for key, value in gold.items():
        task = tasks.get(key)
        where = f"gold.{key}"
        if task is None:
            problems.append(f"{where}: the workflow has no task {key!r} (tasks: {', '.join(tasks)})")
            continue
        if task["type"] in {"single", "multiple"}:
            answers = ", ".join(f"{i}: {answer.get('label', '')}" for i, answer in enumerate(task["answers"]))
            values = [value] if task["type"] == "single" else value
            if not isinstance(values, list) or any(isinstance(v, bool) or not isinstance(v, int) for v in values) or len(set(values)) != len(values):
                kind = "one answer index" if task["type"] == "single" else "a list of distinct answer indices"
                problems.append(f"{where}: {json.dumps(value)} is not {kind} ({answers})")
            elif any(not 0 <= v < len(task["answers"]) for v in values):
                problems.append(f"{where}: {json.dumps(value)} is not an answer of {key} ({answers})")
        else:
            problems.extend(f"{where}: {problem}" for problem in _validate_marks(task, value, image_size))
    return problems
