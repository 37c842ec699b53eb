"""How a machine agent's predictions enter the engine: as one agent (the default), or as one per level of
its confidence, each prediction weighed by the machine's record at that level."""

from __future__ import annotations

import numpy as np
import pytest

from live import engine as engine_lib

TASKS = {
    "first_task": "T0",
    "tasks": {"T0": {"type": "single", "question": "Smooth or featured?", "answers": [{"label": "Smooth"}, {"label": "Featured"}]}},
}
MACHINE = 7  # the machine agent's volunteer id


def _machine_answer(subject: int, answer: int, confidence: float, *, gold: int | None = None, counts: bool = True):
    probabilities = [confidence, 1 - confidence] if answer == 0 else [1 - confidence, confidence]
    return engine_lib.LoggedClassification(
        subject_id=subject, volunteer_id=MACHINE, annotations=[{"task": "T0", "value": answer}], counts=counts,
        gold=None if gold is None else {"T0": gold}, machine_probabilities=probabilities,
    )


def _engine_with_a_machine_record(machine_agents: str | None):
    """An engine that has seen the machine on 80 gold subjects: at 0.55 it was right half the time,
    at 0.97 always."""
    settings = {"scope": "first_question", "policy": "min:3,posterior:0.99,max:40"}
    if machine_agents is not None:
        settings["machine_agents"] = machine_agents
    engine = engine_lib.new_engine(TASKS, engine_lib.engine_config(settings, TASKS))
    rng = np.random.default_rng(0)
    for subject in range(80):
        truth = int(rng.integers(2))
        unsure = subject % 2 == 0
        answer = (truth if subject % 4 == 0 else 1 - truth) if unsure else truth
        engine_lib.apply(engine, _machine_answer(1000 + subject, answer, 0.55 if unsure else 0.97, gold=truth, counts=False))
    return engine


def test_by_confidence_a_prediction_weighs_what_the_machine_record_at_its_confidence_says() -> None:
    engine = _engine_with_a_machine_record("by_confidence")
    assert engine.machine_agents == "by_confidence"
    with pytest.raises(KeyError):  # the machine itself is no agent of this engine, its levels are
        engine.estimators["T0"].worker_state(MACHINE)
    unsure = engine_lib.apply(engine, _machine_answer(1, 1, 0.55)).posteriors["T0"]
    sure = engine_lib.apply(engine, _machine_answer(2, 1, 0.97)).posteriors["T0"]
    assert abs(unsure[1] - 0.5) < 0.1  # a coin flip's answer moves nothing
    assert sure[1] > 0.9
    levels = {engine_lib.machine_worker(MACHINE, p) for p in ([0.45, 0.55], [0.03, 0.97])}
    assert levels == {"machine:7:0", "machine:7:0.95"}
    bits = {level: engine_lib.skill_bits(engine, level) for level in levels}
    assert bits["machine:7:0.95"] > 0.5 > bits["machine:7:0"]


def test_one_machine_agent_weighs_every_prediction_alike() -> None:
    """The default: the machine is one agent of the engine."""
    engine = _engine_with_a_machine_record(None)
    assert engine.machine_agents == "one"
    unsure = engine_lib.apply(engine, _machine_answer(1, 1, 0.55)).posteriors["T0"]
    sure = engine_lib.apply(engine, _machine_answer(2, 1, 0.97)).posteriors["T0"]
    assert unsure == pytest.approx(sure)
    assert engine_lib.skill_bits(engine, MACHINE) is not None


def test_the_setting_is_stored_with_the_log_and_engines_from_before_it_keep_one_machine_agent() -> None:
    stored = engine_lib.engine_config({"machine_agents": "by_confidence"}, TASKS)
    assert stored["machine_agents"] == "by_confidence"
    assert engine_lib.new_engine(TASKS, stored).machine_agents == "by_confidence"
    assert engine_lib.engine_config({}, TASKS)["machine_agents"] == "one"  # written, so a later default cannot change a log
    saved = engine_lib.new_engine(TASKS, stored).to_dict()
    assert engine_lib.WorkflowEngine.from_dict(saved).machine_agents == "by_confidence"
    del saved["machine_agents"]  # as saved before the setting existed
    assert engine_lib.WorkflowEngine.from_dict(saved).machine_agents == "one"
    assert engine_lib.validate_engine_config({"machine_agents": "several"}, TASKS) == ["machine_agents: one of ['one', 'by_confidence']"]
    assert engine_lib.validate_engine_config({"machine_agents": "by_confidence"}, TASKS) == []
