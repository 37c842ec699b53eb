"""The task tree's validation (what a workflow may store) and the demo tree's branches."""

from __future__ import annotations

import copy

from projects.services import DEMO_TASKS
from projects.task_tree import validate_annotations, validate_task_tree


def test_the_demo_tree_is_valid() -> None:
    assert validate_task_tree(DEMO_TASKS) == []


def _broken(change) -> list[str]:
    tree = copy.deepcopy(DEMO_TASKS)
    change(tree)
    return validate_task_tree(tree)


def test_invalid_trees_are_rejected_with_reasons() -> None:
    assert "first_task" in _broken(lambda t: t.update(first_task="T7"))[0]
    assert "does not exist" in _broken(lambda t: t["tasks"]["T0"]["answers"][0].update(next="T9"))[0]
    assert "cycle" in _broken(lambda t: t["tasks"]["T2"].update(next="T0"))[0]
    assert "between 2 and" in _broken(lambda t: t["tasks"]["T1"].update(answers=[{"label": "only"}]))[0]
    assert "rectangle" in _broken(lambda t: t["tasks"]["T2"]["tools"][0].update(type="circle"))[0]
    assert "min <= max" in _broken(lambda t: t["tasks"]["T2"]["tools"][0].update(min=5, max=2))[0]
    assert validate_task_tree([]) and validate_task_tree({"first_task": "T0", "tasks": {}})


def test_the_disk_branch_requires_the_second_question() -> None:
    disk = [{"task": "T0", "value": 1}, {"task": "T1", "value": 0}, {"task": "T2", "value": []}]
    assert validate_annotations(DEMO_TASKS, disk, (100, 100))[1] == []
    skipped = [{"task": "T0", "value": 1}, {"task": "T2", "value": []}]
    assert "expects 'T1'" in validate_annotations(DEMO_TASKS, skipped, (100, 100))[1][0]


def test_boxes_touching_the_image_edge_are_inside() -> None:
    box = {"tool": 0, "x": 0, "y": 0, "width": 100, "height": 100}
    annotations = [{"task": "T0", "value": 0}, {"task": "T2", "value": [box]}]
    assert validate_annotations(DEMO_TASKS, annotations, (100, 100))[1] == []
    box["width"] = 100.5
    assert "outside" in validate_annotations(DEMO_TASKS, annotations, (100, 100))[1][0]


def test_the_demo_disk_question_swaps_clockwise_and_anticlockwise_in_a_mirror() -> None:
    t1 = DEMO_TASKS["tasks"]["T1"]
    swapped = [sorted(t1["answers"][i]["label"] for i in pair) for pair in t1["mirror_swaps"]]
    assert swapped == [["Anticlockwise spiral", "Clockwise spiral"]]


def _with_swaps(swaps: object, task: str = "T1") -> list[str]:
    return _broken(lambda t: t["tasks"][task].update(mirror_swaps=swaps))


def test_mirror_swaps_are_checked_with_field_errors() -> None:
    assert _with_swaps([[2, 1]]) == [] and _with_swaps([]) == []
    assert _with_swaps([[0, 1], [2, 3]], task="T0") == []
    bad = {
        "[1, 2]": (1, 2),
        "[[1, 1]]": [[1, 1]],
        "[[1, 3]]": [[1, 3]],
        "[[-1, 2]]": [[-1, 2]],
        "[[0, 1], [1, 2]]": [[0, 1], [1, 2]],
        "[[1, 2, 0]]": [[1, 2, 0]],
        "[[true, 2]]": [[True, 2]],
        "[[1.0, 2]]": [[1.0, 2]],
        "[1, 2] flat": [1, 2],
    }
    reasons = {name: _with_swaps(swaps) for name, swaps in bad.items()}
    for name, errors in reasons.items():
        assert errors and all(e.startswith("tasks.T1.mirror_swaps: ") for e in errors), (name, errors)
    assert "list of [i, j]" in reasons["[1, 2]"][0]
    assert "with itself" in reasons["[[1, 1]]"][0]
    assert "from 0 to 2" in reasons["[[1, 3]]"][0] and "from 0 to 2" in reasons["[[-1, 2]]"][0]
    assert "answer 1 is already in another pair" in reasons["[[0, 1], [1, 2]]"][0]
    for name in ("[[1, 2, 0]]", "[[true, 2]]", "[[1.0, 2]]", "[1, 2] flat"):
        assert "two answer indices" in reasons[name][0], name
    drawing = _with_swaps([[0, 1]], task="T2")
    assert drawing == ["tasks.T2.mirror_swaps: only a question's answers can be swapped, not a drawing task's"]
