"""The one place where the platform drives the aggregation engine (``aggregation/``).

A workflow's engine (``WorkflowEngine``) is an ``aggregation.WorkflowAggregator`` over its whole task
tree (every question node, every rectangle tool of its drawing tasks), configured from
``Workflow.retirement``:
``{"scope": "workflow", "required": [...], "bar": 0.01 | {task: bar}, "min": 3, "budget": 40,
"estimator": {ConsensusEstimator kwargs}, "machine_agents": "one" | "by_confidence"}``
(see ``aggregation.workflow.WorkflowRetirement``), or with ``"scope": "first_question"`` and a
``"policy"`` the earlier rule where the first question alone decides. Every default lives in
``aggregation.defaults``.
"""

from __future__ import annotations

import bisect
import gc
import json
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from aggregation import defaults
from aggregation.estimator import ConsensusEstimator
from aggregation.workflow import SettingsError, WorkflowAggregator, WorkflowRetirement

# The first-question rule's policy (scope "first_question"): aggregation.defaults says why.
DEFAULT_POLICY = defaults.FIRST_QUESTION_POLICY
# What the platform's engines learn unless a workflow's settings say otherwise: the library's own
# defaults (aggregation.defaults.LEARN_CLASS_PRIOR), written into each stored config so that a later
# change of default never changes how a log replays. ``{"learn_class_prior": false}`` keeps the
# prior fixed (SWAP's way).
DEFAULT_ESTIMATOR_OPTIONS: dict[str, Any] = {"learn_class_prior": defaults.LEARN_CLASS_PRIOR}
# ``{"difficulty": true}``: the engine models a difficulty per subject (``aggregation.difficulty``), so
# that agreeing answers on a hard subject are not taken for more evidence than they are; its posterior
# is calibrated (GZ1 simulated crowds, offline: 0.97 → 96.7–98.1% right, where Dawid–Skene's 0.99 was
# 94.8–96.5%), so a policy's threshold reads as the accuracy asked for. Not the default: in full GZ1
# runs of the machine loop at 0.97 it met the 10×-at-(a)'s-accuracy goal on none of three crowds (seed
# 2: 10.2× but 0.11 points below; seeds 0 and 1: 0.95 and 0.21 points above but 9.1× and 9.3×;
# bench/results/machine_loop_6493.md runs 24–27), and it needs a first refit before its skills mean anything.
# How a machine agent's predictions enter the engine (``Workflow.retirement["machine_agents"]``).
# "one" (the default): the machine is a single agent, its answer the most probable class, weighed by
# one confusion matrix for all its answers. "by_confidence": one engine agent per level of its
# calibrated confidence (the highest of its probabilities; levels from ``MACHINE_CONFIDENCE_EDGES``),
# each with its own learned confusion matrix, so a prediction made at 55% weighs as little as the
# machine's record at 55% says. Why it exists: the subjects left to humans are those the CNN is
# unsure of, where it is right far less often than on average; in a 6,493-galaxy GZ1 run its counted
# answers on the galaxies humans retired were 53% right at a stated 0.5–0.6 and 88% at 0.9–1, yet
# each weighed as a 90%-right volunteer's. Why it is not the default: in two full GZ1 runs it
# measured no gain (bench/results/machine_loop_6493.md, runs 18 and 19: one crowd 6% fewer votes but
# 0.6 points less accurate, the other more votes and less accurate; what the machine retires, which
# it does not change, moved more from run to run). Levels, not the probability as a likelihood: each
# level's matrix is learned like any agent's, and the log, refits and replays stay plain answers.
MACHINE_AGENTS = ("one", "by_confidence")
DEFAULT_MACHINE_AGENTS = MACHINE_AGENTS[0]
MACHINE_CONFIDENCE_EDGES = (0.6, 0.7, 0.8, 0.9, 0.95, 0.99)
ESTIMATOR_OPTIONS = {
    "class_prior", "initial_skill", "prior_strength", "skepticism", "learn", "consensus_min_confidence",
    "learn_class_prior", "learn_skill_prior", "difficulty",
}


ENGINE_KEYS = {"estimator", "machine_agents"}


def _retirement_settings(config: dict) -> dict:
    """The part of a workflow's settings that ``WorkflowRetirement`` reads."""
    return {k: v for k, v in config.items() if k not in ENGINE_KEYS}


def validate_engine_config(config: Any, tasks: dict) -> list[str]:
    """Problems with a workflow's ``retirement`` settings for its task tree, as ``"field: message"``
    (empty when valid)."""
    if not isinstance(config, dict):
        return ["retirement: settings must be an object"]
    errors = []
    try:
        WorkflowRetirement.from_settings(_retirement_settings(config), tasks["tasks"], tasks["first_task"])
    except SettingsError as error:
        errors.extend(error.problems)
    options = config.get("estimator", {})
    if not isinstance(options, dict):
        errors.append("estimator: must be an object")
    else:
        unknown = set(options) - ESTIMATOR_OPTIONS
        if unknown:
            errors.append(f"estimator: unknown options {sorted(unknown)}")
    if config.get("machine_agents", DEFAULT_MACHINE_AGENTS) not in MACHINE_AGENTS:
        errors.append(f"machine_agents: one of {list(MACHINE_AGENTS)}")
    return errors


def engine_config(workflow_retirement: dict, tasks: dict) -> dict:
    """The normalised settings an engine is built from (stored with the log it applies): every default
    resolved and written in, so a log keeps replaying with what it was applied with."""
    retirement = WorkflowRetirement.from_settings(_retirement_settings(workflow_retirement), tasks["tasks"], tasks["first_task"])
    estimator = DEFAULT_ESTIMATOR_OPTIONS | dict(workflow_retirement.get("estimator", {}))
    return {"retirement": retirement.to_dict(), "estimator": estimator,
            "machine_agents": workflow_retirement.get("machine_agents", DEFAULT_MACHINE_AGENTS)}


def stored_retirement(config: dict) -> WorkflowRetirement:
    """The retirement of a stored config. Configs stored before whole-workflow retirement have a bare
    "policy" and no "retirement": they were applied with the first-question rule, and replay so."""
    if "retirement" in config:
        return WorkflowRetirement.from_dict(config["retirement"])
    from aggregation.retirement import policy_from_dict

    return WorkflowRetirement(scope="first_question", policy=policy_from_dict(config["policy"]))


def machine_worker(volunteer_id: int, probabilities: Sequence[float]) -> str:
    """The engine agent that answers for a machine agent's prediction made with these probabilities:
    one per confidence level, named by the level's lower edge ("machine:12:0.9" for 0.9–0.95)."""
    confidence = max(float(p) for p in probabilities)
    lower = (0.0, *MACHINE_CONFIDENCE_EDGES)[bisect.bisect_right(MACHINE_CONFIDENCE_EDGES, confidence)]
    return f"machine:{volunteer_id}:{lower:g}"


class WorkflowEngine:
    """One workflow's aggregator and how machine agents enter it, serialised together."""

    def __init__(self, aggregator: WorkflowAggregator, machine_agents: str = DEFAULT_MACHINE_AGENTS,
                 machine_requests: dict[Any, dict[str, int]] | None = None) -> None:
        self.aggregator = aggregator
        self.machine_agents = machine_agents  # see MACHINE_AGENTS
        # Per unretired subject, the answers of the machine's latest request to retire it that could
        # not be granted yet (``apply``): {subject: {question: answer}}.
        self.machine_requests: dict[Any, dict[str, int]] = dict(machine_requests or {})

    @property
    def first_task(self) -> str:
        return self.aggregator.first_task

    @property
    def estimators(self) -> dict[str, Any]:
        return self.aggregator.estimators

    @property
    def boxes(self) -> dict[str, Any]:
        return self.aggregator.boxes

    def to_dict(self) -> dict:
        return {"format": ENGINE_FORMAT, "aggregator": self.aggregator.to_dict(), "machine_agents": self.machine_agents,
                "machine_requests": [[subject, answers] for subject, answers in self.machine_requests.items()]}

    @classmethod
    def from_dict(cls, data: dict) -> WorkflowEngine:
        """Raises ``ValueError`` for a state saved in another format (the caller replays the log)."""
        if data.get("format") != ENGINE_FORMAT:
            raise ValueError(f"engine state format {data.get('format')!r} is not {ENGINE_FORMAT!r}")
        return cls(WorkflowAggregator.from_dict(data["aggregator"]), data.get("machine_agents", DEFAULT_MACHINE_AGENTS),
                   {subject: answers for subject, answers in data.get("machine_requests", [])})


# /3: the machine's standing retirement requests (``WorkflowEngine.machine_requests``); a state saved
# in /2 lacks them, so it is rebuilt from the log.
ENGINE_FORMAT = "chorus-engine/3"


def new_engine(tasks: dict, config: dict) -> WorkflowEngine:
    aggregator = WorkflowAggregator(
        dict(tasks["tasks"]), first_task=tasks["first_task"], retirement=stored_retirement(config),
        estimator_options=config.get("estimator", {}),
    )
    return WorkflowEngine(aggregator, config.get("machine_agents", DEFAULT_MACHINE_AGENTS))


@dataclass(frozen=True)
class LoggedClassification:
    """What the engine needs of one stored classification."""

    subject_id: int
    volunteer_id: int
    annotations: list[dict]
    counts: bool
    gold: dict | None
    # A machine agent's request to retire the subject on this answer (machine.prediction sets it only for
    # a trained model above its threshold; live.services trusts it only from a machine agent).
    machine_retire: bool = False
    # A machine agent's probabilities for the first question (None for a human's classification).
    machine_probabilities: list[float] | None = None


@dataclass(frozen=True)
class Applied:
    posteriors: dict[str, Any]  # the questions this classification answered
    retired_reason: str | None
    newly_retired: bool
    stored: dict[str, Any]  # what the platform stores for the subject now (``stored_posterior``)


def apply(engine: WorkflowEngine, entry: LoggedClassification) -> Applied:
    """Apply one classification; returns the subject's posteriors and retirement."""
    aggregator = engine.aggregator
    gold = {k: v for k, v in (entry.gold or {}).items() if k in aggregator.estimators or f"{k}.0" in aggregator.boxes}
    agent: Any = entry.volunteer_id
    if entry.machine_probabilities and engine.machine_agents == "by_confidence":
        agent = machine_worker(entry.volunteer_id, entry.machine_probabilities)
    decision = aggregator.add_classification(entry.subject_id, agent, entry.annotations, counts=entry.counts, gold=gold or None)
    posteriors = {key: posterior_of(engine, entry.subject_id, key) for key in decision.questions}
    requests = engine.machine_requests
    if entry.machine_probabilities is not None or entry.machine_retire:
        # The machine's latest prediction of the subject replaces any earlier request: a newer
        # version that no longer asks withdraws it.
        requests.pop(entry.subject_id, None)
        answers = _machine_answers(aggregator, entry) if entry.machine_retire else {}
        if answers and decision.retired is None:
            requests[entry.subject_id] = answers
    answers = requests.get(entry.subject_id)
    if decision.retired is not None:
        requests.pop(entry.subject_id, None)
    elif answers and _machine_retire(aggregator, entry.subject_id, answers):
        # Granted now, or on a later human classification once the rest of the tree is settled: the
        # machine vouches for the questions, volunteers still draw (a CNN that answers "smooth"
        # cannot mark companions), and the retirement is the machine's whichever came last.
        requests.pop(entry.subject_id, None)
        return Applied(posteriors, MACHINE_REASON, True, stored_posterior(engine, entry.subject_id))  # after the retirement's credit
    return Applied(posteriors, decision.retired, decision.newly_retired,
                   stored_posterior(engine, entry.subject_id, decision.risks, decision.boxes))


# Retirement by the machine agent: the reason recorded, and the classification metadata key that asks for it.
MACHINE_REASON = "machine"
MACHINE_RETIRE_KEY = "machine_retire"


def _machine_answers(aggregator: WorkflowAggregator, entry: LoggedClassification) -> dict[str, int]:
    """The machine's answers to the questions it vouches for in ``entry``: every question it
    answered with the whole-workflow scope, the first question alone under the first-question rule."""
    answers = {a.get("task"): a.get("value") for a in entry.annotations
               if isinstance(aggregator.estimators.get(a.get("task")), ConsensusEstimator)}
    if aggregator.retirement.scope != "workflow":
        answers = {key: value for key, value in answers.items() if key == aggregator.first_task}
    if not all(isinstance(value, int) for value in answers.values()):
        return {}
    return answers


def _machine_retire(aggregator: WorkflowAggregator, subject_id: Any, answers: dict[str, int]) -> bool:
    """Retire an active, non-gold subject on the machine's confident answers when the subject's
    posterior (every answer so far, the machine's included) agrees with each of them, and, with
    whole-workflow retirement, every other required task is already settled: the machine vouches for
    the questions it answered (machine.prediction asks only where it is sure of each, and answers only
    the questions it is trusted on), never for the rest of the tree. The rest is weighed with the
    reach its answers imply (a galaxy it vouches is smooth never reaches the spiral-arms question).
    Under the first-question rule, its answer to the first question alone.

    Checked when the machine asks and again at each later classification of the subject until it is
    granted, retired otherwise, or withdrawn by a newer prediction (``WorkflowEngine.machine_requests``).
    Decided from the log alone, so a rebuild repeats it exactly."""
    whole = aggregator.retirement.scope == "workflow"
    if not answers:
        return False
    posteriors = {key: np.asarray(aggregator.posterior(subject_id, key), dtype=float) for key in aggregator.estimators}
    if any(int(posteriors[key].argmax()) != answer for key, answer in answers.items()):
        return False
    if whole:
        for key, answer in answers.items():
            posteriors[key] = np.eye(len(posteriors[key]))[answer]
        reach = aggregator.reach(subject_id, posteriors)
        if any(risk.bar is not None and reach[risk.task] * risk.risk >= risk.bar
               for risk in aggregator.task_risks(subject_id) if risk.task not in answers):
            return False
    return aggregator.retire(subject_id, MACHINE_REASON)


def posterior_of(engine: WorkflowEngine, subject_id: int, task_key: str) -> Any:
    return engine.aggregator.posterior(subject_id, task_key)


# Keys of a stored posterior that are not tasks ('@' is never in a task key: projects.task_tree).
RISK_KEY = "@risk"  # each task's reach, risk, weighted risk, bar, settled (aggregation.workflow.TaskRisk)
VALUE_KEY = "@value"  # what one more human classification is worth, in bits (docs/queue.md)


def stored_posterior(engine: WorkflowEngine, subject_id: int, risks: Sequence[Any] | None = None,
                     box_results: dict[str, Any] | None = None) -> dict[str, Any]:
    """What the platform stores for a subject: every question's posterior, the aggregated boxes of
    every drawing task, each task's risk (``RISK_KEY``) and the subject's value for the queue
    (``VALUE_KEY``). ``risks`` and ``box_results``, when given, are those the engine computed while
    applying the subject's last classification (reused, not rebuilt)."""
    aggregator = engine.aggregator
    out: dict[str, Any] = {key: posterior_of(engine, subject_id, key) for key in aggregator.estimators}
    out.update(aggregated_boxes(engine, subject_id, box_results or {}))
    risks = aggregator.task_risks(subject_id) if risks is None else risks
    out[RISK_KEY] = {risk.task: risk.to_dict() for risk in risks}
    out[VALUE_KEY] = aggregator.value(subject_id, risks)
    return out


def queue_value(engine: WorkflowEngine, subject_id: Any) -> float:
    """What one more human classification of this subject is worth (``WorkflowAggregator.value``)."""
    return engine.aggregator.value(subject_id)


def aggregated_boxes(engine: WorkflowEngine, subject_id: int, results: dict[str, Any] | None = None) -> dict[str, dict]:
    """Per drawing task: its objects (merged box, P(real), standard error, tool) and expected risk.
    ``results``: box engines' results already computed for this subject ("<task>.<tool>" → BoxResult)."""
    out: dict[str, dict] = {}
    for name, box_engine in engine.boxes.items():
        task_key, tool = name.rsplit(".", 1)
        result = (results or {}).get(name)
        if result is None:
            if str(subject_id) not in box_engine:
                continue  # nobody drew on this subject with this tool yet
            result = box_engine.result(str(subject_id))
        entry = out.setdefault(task_key, {"objects": [], "expected_risk": 0.0})
        entry["expected_risk"] += float(result.expected_risk or 0.0)
        for obj in result.objects:
            x, y, width, height = (float(v) for v in obj.box)
            entry["objects"].append({
                "tool": int(tool), "x": x, "y": y, "width": width, "height": height,
                "probability": float(obj.p_real), "stderr": [float(v) for v in obj.stderr],
            })
    return out


def refit(engine: WorkflowEngine) -> list[Any]:
    """The batch EM refit of every question node, warm-started from the current state, then
    retirement looked at again; returns the subjects it retired."""
    return engine.aggregator.refit()


def retired_subjects(engine: WorkflowEngine) -> dict[Any, str]:
    """Subject id → retirement reason, for every subject the engine has retired."""
    return engine.aggregator.retired()


def skill_bits(engine: WorkflowEngine, volunteer_id: int) -> float | None:
    """The volunteer's expected information per answer on the first question, in bits (None for a
    workflow whose first task is a drawing, or a volunteer it has not seen)."""
    first = engine.estimators.get(engine.first_task)
    if not isinstance(first, ConsensusEstimator):
        return None
    try:
        return float(first.skill_bits(volunteer_id))
    except KeyError:
        return None


def to_bytes(engine: WorkflowEngine) -> bytes:
    """The engine for Redis. orjson: the standard library's encoder took two thirds of a save (0.57 s
    of 0.93 s for 20,000 subjects; orjson 0.04 s) and a save stops the applier. The state holds only
    finite numbers (orjson would write NaN as null; tests/live/test_engine_stored.py checks a round trip)."""
    # The collector paused meanwhile: building the state's hundreds of thousands of small containers
    # set off full collections over the whole engine, which took most of a save (a save stops the
    # applier: 2.0 s with the collector on against 0.5-0.7 s off, 20,000 subjects with boxes, in /tmp
    # microbenchmarks on a loaded machine). Nothing here makes cycles that must be collected at once.
    with _collector_paused():
        return zlib.compress(orjson.dumps(engine.to_dict()), 1)


@contextmanager
def _collector_paused() -> Iterator[None]:
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def from_bytes(blob: bytes) -> WorkflowEngine:
    # orjson here too: the standard library's decoder took 1.9 s of a 20,000-subject engine's load
    # (orjson 0.8 s). A state saved before to_bytes used orjson may hold what only the standard
    # library reads (NaN): it is still read, once, the slow way.
    text = zlib.decompress(blob)
    with _collector_paused():  # as in to_bytes: a load builds as many containers as a save
        try:
            data = orjson.loads(text)
        except orjson.JSONDecodeError:
            data = json.loads(text)
        return WorkflowEngine.from_dict(data)
