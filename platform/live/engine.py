"""The one place where the platform drives the aggregation engine (``aggregation/``).

A workflow's engine (``WorkflowEngine``) is an ``aggregation.WorkflowAggregator`` over its question
tree plus one ``aggregation.boxes.BoxEngine`` per rectangle tool of its drawing tasks, configured
from ``Workflow.retirement``:
``{"policy": "min:3,posterior:0.99,max:40" | {"rules": [...]}, "estimator": {ConsensusEstimator kwargs}}``.
The first question decides retirement; boxes are aggregated alongside (objects with P(real) and
their expected risk) and shown and exported with the subject.
"""

from __future__ import annotations

import bisect
import json
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aggregation.boxes import BoxEngine
from aggregation.estimator import ConsensusEstimator
from aggregation.retirement import RetirementPolicy, parse_policy, policy_from_dict
from aggregation.workflow import WorkflowAggregator

# Humans retire a subject once one answer of the first question is 99% sure (after at least three
# counted classifications, so one early lucky streak cannot), and in any case after 40, Galaxy Zoo 2's
# budget per galaxy.
DEFAULT_POLICY = "min:3,posterior:0.99,max:40"
# What the platform's engines learn unless a workflow's settings say otherwise. The class prior: every
# refit re-estimates the share of each answer (Dawid–Skene's EM does) instead of keeping it uniform.
# Why: most galaxies are not 50:50 (GZ1: 72% smooth), and a uniform prior makes every smooth galaxy
# start as a coin toss. On GZ1 with the bench's simulated crowds (five of them, engine alone,
# ``bench/engine_class_prior.py``) a uniform prior took 9.4 votes per galaxy at 95.2% right, the
# learned one 7.7 at 96.4%, nearly what knowing the true share gives (7.5 at 96.8%).
# ``{"learn_class_prior": false}`` keeps the prior fixed (SWAP's way).
DEFAULT_ESTIMATOR_OPTIONS: dict[str, Any] = {"learn_class_prior": True}
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


def policy_of(config: dict) -> RetirementPolicy:
    policy = config.get("policy", DEFAULT_POLICY)
    return parse_policy(policy) if isinstance(policy, str) else policy_from_dict(policy)


def validate_engine_config(config: Any) -> list[str]:
    """Problems with a workflow's ``retirement`` settings (empty when valid)."""
    if not isinstance(config, dict):
        return ["retirement settings must be an object"]
    errors = []
    try:
        policy_of(config)
    except (ValueError, TypeError) as error:
        errors.append(f"policy: {error}")
    unknown = set(config.get("estimator", {})) - ESTIMATOR_OPTIONS
    if unknown:
        errors.append(f"estimator: unknown options {sorted(unknown)}")
    if config.get("machine_agents", DEFAULT_MACHINE_AGENTS) not in MACHINE_AGENTS:
        errors.append(f"machine_agents: one of {list(MACHINE_AGENTS)}")
    return errors


def engine_config(workflow_retirement: dict) -> dict:
    """The normalised settings an engine is built from (stored with the log it applies)."""
    # The defaults are written into the stored settings, so a log keeps replaying with what it was applied with.
    estimator = DEFAULT_ESTIMATOR_OPTIONS | dict(workflow_retirement.get("estimator", {}))
    return {"policy": policy_of(workflow_retirement).to_dict(), "estimator": estimator,
            "machine_agents": workflow_retirement.get("machine_agents", DEFAULT_MACHINE_AGENTS)}


def machine_worker(volunteer_id: int, probabilities: Sequence[float]) -> str:
    """The engine agent that answers for a machine agent's prediction made with these probabilities:
    one per confidence level, named by the level's lower edge ("machine:12:0.9" for 0.9–0.95)."""
    confidence = max(float(p) for p in probabilities)
    lower = (0.0, *MACHINE_CONFIDENCE_EDGES)[bisect.bisect_right(MACHINE_CONFIDENCE_EDGES, confidence)]
    return f"machine:{volunteer_id}:{lower:g}"


class WorkflowEngine:
    """Questions and boxes of one workflow, applied together, serialised together."""

    def __init__(self, questions: WorkflowAggregator, boxes: dict[str, BoxEngine], machine_agents: str = DEFAULT_MACHINE_AGENTS) -> None:
        self.questions = questions
        self.boxes = boxes  # "<drawing task>.<tool index>" → engine
        self.machine_agents = machine_agents  # see MACHINE_AGENTS

    @property
    def first_task(self) -> str:
        return self.questions.first_task

    @property
    def estimators(self) -> dict[str, Any]:
        return self.questions.estimators

    def to_dict(self) -> dict:
        return {"questions": self.questions.to_dict(), "boxes": {k: e.to_dict() for k, e in self.boxes.items()},
                "machine_agents": self.machine_agents}

    @classmethod
    def from_dict(cls, data: dict) -> WorkflowEngine:
        return cls(
            WorkflowAggregator.from_dict(data["questions"]), {k: BoxEngine.from_dict(v) for k, v in data["boxes"].items()},
            data.get("machine_agents", DEFAULT_MACHINE_AGENTS),
        )


def new_engine(tasks: dict, config: dict) -> WorkflowEngine:
    policy = policy_of(config)
    options = config.get("estimator", {})

    def make_estimator(task_key: str, n_classes: int) -> ConsensusEstimator:
        # Retirement is decided on the first question; the other nodes only aggregate.
        return ConsensusEstimator(n_classes, policy=policy if task_key == tasks["first_task"] else None, **options)

    first_question = tasks["first_task"]
    if tasks["tasks"][first_question]["type"] not in ("single", "multiple"):
        raise ValueError("the live loop retires on the first task, which must be a question")
    questions = WorkflowAggregator(dict(tasks["tasks"]), first_task=first_question, make_estimator=make_estimator)
    boxes = {
        f"{key}.{index}": BoxEngine(policy=RetirementPolicy([]))  # boxes inform; the question retires
        for key, task in tasks["tasks"].items()
        if task["type"] == "drawing"
        for index, _ in enumerate(task["tools"])
    }
    return WorkflowEngine(questions, boxes, config.get("machine_agents", DEFAULT_MACHINE_AGENTS))


@dataclass(frozen=True)
class LoggedClassification:
    """What the engine needs of one stored classification."""

    subject_id: int
    volunteer_id: int
    annotations: list[dict]
    counts: bool
    gold: dict | None
    # A machine agent's request to retire the subject on this answer (machine.services sets it only for
    # a trained model above its threshold; live.services trusts it only from a machine agent).
    machine_retire: bool = False
    # A machine agent's probabilities for the first question (None for a human's classification).
    machine_probabilities: list[float] | None = None


@dataclass(frozen=True)
class Applied:
    posteriors: dict[str, Any]
    retired_reason: str | None
    newly_retired: bool


def apply(engine: WorkflowEngine, entry: LoggedClassification) -> Applied:
    """Apply one classification; returns the subject's question posteriors and retirement."""
    questions = engine.questions
    gold = {k: v for k, v in (entry.gold or {}).items() if k in questions.estimators}
    agent: Any = entry.volunteer_id
    if entry.machine_probabilities and engine.machine_agents == "by_confidence":
        agent = machine_worker(entry.volunteer_id, entry.machine_probabilities)
    decisions = questions.add_classification(entry.subject_id, agent, entry.annotations, counts=entry.counts, gold=gold or None)
    for annotation in entry.annotations:
        task = questions.tasks.get(annotation["task"], {})
        if task.get("type") != "drawing":
            continue
        for index in range(len(task["tools"])):
            marks = [(m["x"], m["y"], m["width"], m["height"]) for m in annotation["value"] if m["tool"] == index]
            box_gold = (entry.gold or {}).get(annotation["task"])
            truth = None
            if isinstance(box_gold, list):
                truth = [(m["x"], m["y"], m["width"], m["height"]) for m in box_gold if m.get("tool", 0) == index]
            engine.boxes[f"{annotation['task']}.{index}"].add_classification(
                str(entry.subject_id), str(entry.volunteer_id), marks, counts=entry.counts, gold=truth
            )
    first = decisions.get(questions.first_task)
    posteriors = {key: posterior_of(engine, entry.subject_id, key) for key in decisions}
    if first is None:
        return Applied(posteriors, questions.retirement_reason(entry.subject_id), False)
    if entry.machine_retire and first.retired is None and _machine_retire(questions, entry):
        return Applied(posteriors, MACHINE_REASON, True)
    return Applied(posteriors, first.retired, bool(first.newly_retired))


# Retirement by the machine agent: the reason recorded, and the classification metadata key that asks for it.
MACHINE_REASON = "machine"
MACHINE_RETIRE_KEY = "machine_retire"


def _machine_retire(questions: WorkflowAggregator, entry: LoggedClassification) -> bool:
    """Retire an active, non-gold subject on the machine's confident answer when the subject's
    posterior (every answer so far, the machine's included) agrees with that answer.

    Decided from the log alone, so a rebuild repeats it exactly."""
    estimator = questions.estimators[questions.first_task]
    if not isinstance(estimator, ConsensusEstimator):
        return False
    answer = next((a["value"] for a in entry.annotations if a.get("task") == questions.first_task), None)
    state = estimator.subject_state(entry.subject_id)
    if not isinstance(answer, int) or state["gold"] is not None or state["retired"] is not None:
        return False
    log_posterior = state["log_posterior"]
    if max(range(len(log_posterior)), key=log_posterior.__getitem__) != answer:
        return False
    state["retired"] = MACHINE_REASON
    estimator.load_subject_state(entry.subject_id, state)
    return True


def posterior_of(engine: WorkflowEngine, subject_id: int, task_key: str) -> Any:
    return engine.questions.posterior(subject_id, task_key)


def aggregated_boxes(engine: WorkflowEngine, subject_id: int) -> dict[str, dict]:
    """Per drawing task: its objects (merged box, P(real), standard error, tool) and expected risk."""
    out: dict[str, dict] = {}
    for name, box_engine in engine.boxes.items():
        task_key, tool = name.rsplit(".", 1)
        try:
            objects = box_engine.objects(str(subject_id))
            risk = box_engine.summary(str(subject_id)).expected_risk
        except KeyError:
            continue  # nobody drew on this subject with this tool yet
        entry = out.setdefault(task_key, {"objects": [], "expected_risk": 0.0})
        entry["expected_risk"] += float(risk or 0.0)
        for obj in objects:
            x, y, width, height = (float(v) for v in obj.box)
            entry["objects"].append({
                "tool": int(tool), "x": x, "y": y, "width": width, "height": height,
                "probability": float(obj.p_real), "stderr": [float(v) for v in obj.stderr],
            })
    return out


def refit(engine: WorkflowEngine) -> None:
    """The batch EM refit of every question node, warm-started from the current state."""
    for estimator in engine.questions.estimators.values():
        for node in estimator if isinstance(estimator, list) else [estimator]:
            node.refit(retire=True)


def retired_subjects(engine: WorkflowEngine) -> dict[Any, str]:
    """Subject id → retirement reason, for every subject the engine has retired."""
    return dict(engine.estimators[engine.first_task].retired())


def skill_bits(engine: WorkflowEngine, volunteer_id: int) -> float | None:
    """The volunteer's expected information per answer on the first question, in bits."""
    first = engine.estimators[engine.first_task]
    try:
        return float(first.skill_bits(volunteer_id))
    except KeyError:
        return None


def to_bytes(engine: WorkflowEngine) -> bytes:
    return zlib.compress(json.dumps(engine.to_dict(), separators=(",", ":")).encode(), 1)


def from_bytes(blob: bytes) -> WorkflowEngine:
    return WorkflowEngine.from_dict(json.loads(zlib.decompress(blob)))
