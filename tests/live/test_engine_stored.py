"""What the live loop stores for a subject is the engine's state after the classification, its
retirement's credit included (the platform_boxes bench found it stored the state before)."""

from __future__ import annotations

from live import engine as engine_lib

DRAWING_ONLY = {"first_task": "T0", "tasks": {"T0": {
    "type": "drawing", "instruction": "Mark", "tools": [{"type": "rectangle", "label": "p", "min": 0, "max": 20}], "next": None}}}


def test_the_retiring_classification_stores_the_state_after_its_credit() -> None:
    engine = engine_lib.new_engine(DRAWING_ONLY, engine_lib.engine_config({}, DRAWING_ONLY))
    box = {"tool": 0, "x": 10.0, "y": 20.0, "width": 30.0, "height": 60.0}
    marks = [[box], [{**box, "x": 11.0, "y": 21.0, "width": 29.0, "height": 58.0}], [box]]
    for volunteer, value in enumerate(marks, start=1):
        applied = engine_lib.apply(engine, engine_lib.LoggedClassification(1, volunteer, [{"task": "T0", "value": value}], True, None))
        assert applied.stored == engine_lib.stored_posterior(engine, 1)  # every time, not only at retirement
    assert applied.newly_retired and applied.retired_reason == "consensus:T0"


def test_a_saved_engine_with_questions_and_boxes_loads_back_identical() -> None:
    from projects.services import DEMO_TASKS

    engine = engine_lib.new_engine(DEMO_TASKS, engine_lib.engine_config({}, DEMO_TASKS))
    box = {"tool": 0, "x": 10.0, "y": 20.0, "width": 30.0, "height": 60.0}
    for n in range(40):
        answer = n % 2
        annotations = [{"task": "T0", "value": answer}, *([{"task": "T1", "value": n % 3}] if answer else []),
                       {"task": "T2", "value": [{**box, "x": 10.0 + n % 4 / 3}] if n % 3 else []}]
        engine_lib.apply(engine, engine_lib.LoggedClassification(1 + n % 5, 1 + n % 7, annotations, True, None))
    loaded = engine_lib.from_bytes(engine_lib.to_bytes(engine))
    assert loaded.to_dict() == engine.to_dict()
    assert [engine_lib.stored_posterior(loaded, s) for s in range(1, 6)] == [engine_lib.stored_posterior(engine, s) for s in range(1, 6)]
