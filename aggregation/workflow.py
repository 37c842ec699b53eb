"""Aggregating a whole workflow: every question of its tree and every drawing task, and deciding
when the workflow is settled for a subject.

A tree is a dict of tasks: a question ``{"type": "single"|"multiple", "question": str, "answers":
[{"label": str, "next": task_key | None}]}`` (a multiple-choice task has one ``next`` for all
answers), or a drawing task ``{"type": "drawing", "tools": [{"type": "rectangle", ...}], "next":
...}``. Each single-choice node has its own ``ConsensusEstimator`` over the volunteers who reached it
(a skill per volunteer per question); a multiple-choice node is one yes/no estimator per answer; each
rectangle tool of a drawing task is a ``BoxEngine``.

Whole-workflow retirement (``WorkflowRetirement``, scope ``"workflow"``, the default). Per subject:

- a question node's risk is its decision's misclassification probability, 1 − max posterior (for a
  multiple-choice node, the sum over its answers: expected wrong ticks), *weighted by its reach*: the
  posterior probability that a volunteer gets to the node, the sum over the paths from the first task
  of the product of the answer posteriors along each (a branch that 97% of the crowd would not take
  weighs 3%). A node nobody has answered yet for this subject has the class prior as its posterior;
- a drawing task's risk is the box engine's expected errors (false + missed + badly placed objects,
  Lean Crowdsourcing's risk), summed over its tools, weighted by its reach too; before anyone drew,
  the expected number of objects the engine has learned a subject holds (all of them missed);
- the subject retires once ``min_classifications`` classifications of volunteers of established skill
  have counted (the first question's ``n_established``: a newcomer counts 0, see ``half_trust``) and
  every required task's weighted risk is below its bar (reason ``"consensus:<task>"``, the task that
  settled last), or once the ``budget`` of counted classifications is spent (``"limit"``), counted
  as the guard counts (fresh identities cannot spend it). Gold subjects never retire.
- ``half_trust`` (``aggregation.defaults.HALF_TRUST``) is given to every question node's estimator: a
  volunteer's answers are weighed as far as the engine has evidence of its skill, so fresh identities
  move no posterior and open no guard (``ConsensusEstimator``). Drawing tasks are weighed by the box
  engine's own volunteer model, without it; a workflow whose first task is a drawing counts every
  classification in its guard.

Scope ``"first_question"`` is the earlier rule, kept so the GZX comparison can still be run: the
first question's estimator carries the policy and the subject retires when it does.

``value(subject)`` is what one more classification is worth, for the queue: see its docstring and
docs/queue.md.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import defaults
from .boxes import BoxEngine, BoxResult
from .estimator import ConsensusEstimator, Decision
from .retirement import RetirementPolicy, parse_policy, policy_from_dict

QUESTION_TYPES = ("single", "multiple")
DRAWING_TYPE = "drawing"
SCOPES = ("workflow", "first_question")
CONSENSUS_REASON = "consensus"
LIMIT_REASON = "limit"


def _next_keys(task: Mapping[str, Any]) -> list[str | None]:
    if task.get("type") == "single":
        return [answer.get("next") for answer in task.get("answers", [])]
    return [task.get("next")]


def check_tree(tasks: Mapping[str, Mapping[str, Any]], first_task: str) -> None:
    """Raise ``ValueError`` naming the problem if the tree cannot be aggregated."""
    if not tasks:
        raise ValueError("the workflow has no task")
    if first_task not in tasks:
        raise ValueError(f"first task {first_task!r} is not a task of the workflow")
    kinds = {key: task.get("type") for key, task in tasks.items()}
    if not any(kind in QUESTION_TYPES or kind == DRAWING_TYPE for kind in kinds.values()):
        raise ValueError("the workflow has no question and no drawing task")
    for key, task in tasks.items():
        if kinds[key] in QUESTION_TYPES:
            answers = task.get("answers")
            if not isinstance(answers, list) or not answers:
                raise ValueError(f"task {key!r} has no answers")
            if kinds[key] == "single" and len(answers) < 2:
                raise ValueError(f"single-choice task {key!r} needs at least two answers")
        if kinds[key] == DRAWING_TYPE and not task.get("tools"):
            raise ValueError(f"drawing task {key!r} has no tools")
        for nxt in _next_keys(task):
            if nxt is not None and nxt not in tasks:
                raise ValueError(f"task {key!r} leads to unknown task {nxt!r}")
    _topological_order(tasks, first_task)  # raises on a cycle


def _topological_order(tasks: Mapping[str, Mapping[str, Any]], first_task: str) -> list[str]:
    """The tasks reachable from ``first_task``, each after every task that leads to it."""
    order: list[str] = []
    state: dict[str, int] = {}

    def visit(key: str) -> None:
        state[key] = 1
        for nxt in _next_keys(tasks[key]):
            if nxt is None:
                continue
            if state.get(nxt) == 1:
                raise ValueError("the task tree has a cycle")
            if nxt not in state:
                visit(nxt)
        state[key] = 2
        order.append(key)

    visit(first_task)
    return order[::-1]


def _aggregated_tasks(tasks: Mapping[str, Mapping[str, Any]]) -> list[str]:
    return [k for k, t in tasks.items() if t.get("type") in QUESTION_TYPES or t.get("type") == DRAWING_TYPE]


@dataclass(frozen=True)
class WorkflowRetirement:
    """When a subject of a workflow retires. ``from_settings`` reads the JSON a scientist writes,
    ``to_dict`` the resolved form (every default written in, so a stored log replays the same).

    Settings (all optional): ``{"scope": "workflow" | "first_question", "required": [task, ...]
    (default: every question and drawing task), "bar": 0.01 | {task: bar} (one for all, or per task;
    tasks not named get the default of their kind), "min": 3, "budget": 40, "half_trust": 3}``;
    with scope ``"first_question"``, ``"policy"`` (a policy string or its JSON) and ``"half_trust"``
    instead of the rest. A stored form without ``half_trust`` (``from_dict``) was applied before it
    existed, trusting everyone at once, and replays so (0).
    """

    scope: str = "workflow"
    required: tuple[str, ...] = ()
    bars: Mapping[str, float] = field(default_factory=dict)
    min_classifications: int = defaults.MIN_CLASSIFICATIONS
    budget: int = defaults.BUDGET
    policy: RetirementPolicy | None = None  # scope "first_question" only
    # 0 when built directly, as every form stored before issue 25 was applied (trusting everyone at
    # once); ``from_settings`` resolves the default, ``defaults.HALF_TRUST``.
    half_trust: float = 0.0

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any] | None, tasks: Mapping[str, Mapping[str, Any]],
                      first_task: str) -> WorkflowRetirement:
        """Validate and resolve; raises ``SettingsError`` listing every problem by field."""
        settings = dict(settings or {})
        errors: list[str] = []
        scope = settings.get("scope", "workflow")
        if scope not in SCOPES:
            raise SettingsError([f"scope: one of {list(SCOPES)}"])
        half_trust = settings.get("half_trust", defaults.HALF_TRUST)
        if isinstance(half_trust, bool) or not isinstance(half_trust, (int, float)) or not 0 <= half_trust <= 1000:
            errors.append("half_trust: a number from 0 (trust every volunteer at once) to 1000")
            half_trust = defaults.HALF_TRUST
        if scope == "first_question":
            for name in ("required", "bar", "min", "budget"):
                if name in settings:
                    errors.append(f"{name}: applies only with scope 'workflow'; the first question's "
                                  "policy decides here")
            if tasks.get(first_task, {}).get("type") not in QUESTION_TYPES:
                errors.append("scope: 'first_question' needs a first task that is a question")
            policy_setting = settings.get("policy", defaults.FIRST_QUESTION_POLICY)
            policy = None
            try:
                policy = (parse_policy(policy_setting) if isinstance(policy_setting, str)
                          else policy_from_dict(policy_setting))
            except (ValueError, TypeError, AttributeError) as error:
                errors.append(f"policy: {error}")
            if errors:
                raise SettingsError(errors)
            return cls(scope=scope, policy=policy, half_trust=float(half_trust))
        if "policy" in settings:
            errors.append("policy: applies only with scope 'first_question'; the whole workflow "
                          "retires by 'bar', 'min' and 'budget'")
        aggregated = _aggregated_tasks(tasks)
        required = settings.get("required", aggregated)
        if not isinstance(required, list) or not required or not all(isinstance(k, str) for k in required):
            errors.append("required: a non-empty list of task keys")
            required = aggregated
        else:
            unknown = [k for k in required if k not in aggregated]
            if unknown:
                errors.append(f"required: {unknown} are not question or drawing tasks of the workflow")
            if len(set(required)) != len(required):
                errors.append("required: each task once")
        required = [k for k in dict.fromkeys(required) if k in aggregated]

        def kind_bar(key: str) -> float:
            kind = tasks[key].get("type")
            return defaults.DRAWING_BAR if kind == DRAWING_TYPE else defaults.QUESTION_BAR

        bar_setting = settings.get("bar")
        bars = {key: kind_bar(key) for key in required}
        if bar_setting is not None:
            if isinstance(bar_setting, Mapping):
                for key, value in bar_setting.items():
                    if key not in required:
                        errors.append(f"bar: {key!r} is not a required task")
                    elif not _is_bar(value):
                        errors.append(f"bar: {key!r} needs a number above 0 and at most 1")
                    else:
                        bars[key] = float(value)
            elif _is_bar(bar_setting):
                bars = {key: float(bar_setting) for key in required}
            else:
                errors.append("bar: a number above 0 and at most 1, or an object {task: bar}")
        has_question = any(tasks[k].get("type") in QUESTION_TYPES for k in required)
        default_min = defaults.MIN_CLASSIFICATIONS if has_question else defaults.MIN_CLASSIFICATIONS_DRAWING_ONLY
        minimum = settings.get("min", default_min)
        budget = settings.get("budget", defaults.BUDGET)
        if not _is_count(minimum):
            errors.append("min: a whole number of classifications, at least 1")
            minimum = default_min
        if not _is_count(budget) or budget > 10_000:
            errors.append("budget: a whole number of classifications, 1 to 10000")
        elif budget < minimum:
            errors.append(f"budget: at least min ({minimum})")
        unknown_keys = set(settings) - {"scope", "required", "bar", "min", "budget", "policy", "half_trust"}
        if unknown_keys:
            errors.append(f"retirement: unknown settings {sorted(unknown_keys)}")
        if errors:
            raise SettingsError(errors)
        return cls(scope=scope, required=tuple(required), bars=bars, min_classifications=int(minimum),
                   budget=int(budget), half_trust=float(half_trust))

    def to_dict(self) -> dict:
        if self.scope == "first_question":
            assert self.policy is not None
            return {"scope": self.scope, "policy": self.policy.to_dict(), "half_trust": self.half_trust}
        return {"scope": self.scope, "required": list(self.required), "bars": dict(self.bars),
                "min": self.min_classifications, "budget": self.budget, "half_trust": self.half_trust}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> WorkflowRetirement:
        half_trust = float(data.get("half_trust", 0.0))  # stored before issue 25: everyone trusted at once
        if data["scope"] == "first_question":
            return cls(scope="first_question", policy=policy_from_dict(data["policy"]), half_trust=half_trust)
        return cls(scope="workflow", required=tuple(data["required"]), bars=dict(data["bars"]),
                   min_classifications=int(data["min"]), budget=int(data["budget"]), half_trust=half_trust)


class SettingsError(ValueError):
    """Bad retirement settings; ``problems`` are ``"field: message"`` strings."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def _entropy_bits(p: np.ndarray) -> np.ndarray:
    q = np.clip(p, 1e-300, 1.0)
    return -(p * np.log2(q)).sum(axis=-1)


_POOLED: dict[bytes, tuple[np.ndarray, np.ndarray]] = {}  # skill prior → (its mean, each row's entropy)


def _answer_information(posterior: np.ndarray, skill_prior: np.ndarray) -> float:
    """Mutual information (bits) of a node's truth and one more answer, the answerer's confusion
    matrix being the mean of the Dirichlet ``skill_prior`` (truth × answer)."""
    key = skill_prior.tobytes()
    cached = _POOLED.get(key)
    if cached is None:  # the skill prior moves only at a refit: a handful per workflow
        if len(_POOLED) > 256:
            _POOLED.clear()
        pooled = skill_prior / skill_prior.sum(axis=1, keepdims=True)
        cached = _POOLED[key] = (pooled, _entropy_bits(pooled))
    pooled, row_entropy = cached
    answer = posterior @ pooled
    return float(max(_entropy_bits(answer) - posterior @ row_entropy, 0.0))


def _is_bar(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value <= 1


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


@dataclass(frozen=True)
class TaskRisk:
    """One task of one subject: how likely a volunteer is to reach it, the risk of its current
    decision, that risk weighted by the reach, and the bar it must pass."""

    task: str
    kind: str  # "question" or "drawing"
    reach: float
    risk: float
    weighted_risk: float
    bar: float | None  # None: not required
    answers: int  # counted answers (drawings) on this task for this subject

    @property
    def settled(self) -> bool:
        return self.bar is None or self.weighted_risk < self.bar

    def to_dict(self) -> dict:
        return {"kind": self.kind, "reach": self.reach, "risk": self.risk, "weighted_risk": self.weighted_risk,
                "bar": self.bar, "settled": self.settled, "answers": self.answers}


@dataclass(frozen=True)
class WorkflowDecision:
    """What ``add_classification`` returns."""

    subject: Hashable
    questions: dict[str, Decision | list[Decision]]
    retired: str | None
    newly_retired: bool
    counted: bool
    risks: list[TaskRisk] = field(default_factory=list)  # every task's risk after this classification
    boxes: dict[str, BoxResult] = field(default_factory=dict)  # "<task>.<tool>" → the box engine's result


class _SubjectState:
    __slots__ = ("n_counted", "retired", "gold", "unsettled")

    def __init__(self, n_counted: int = 0, retired: str | None = None, gold: bool = False,
                 unsettled: list[str] | None = None) -> None:
        self.n_counted = n_counted
        self.retired = retired
        self.gold = gold
        self.unsettled = unsettled  # required tasks unsettled at the last evaluation (None: never)


class WorkflowAggregator:
    """Every question node and drawing task of a workflow, and the subject's retirement.

    ``retirement``: a ``WorkflowRetirement``, or its settings (``from_settings``); default the whole
    workflow with ``aggregation.defaults``. ``policy``: shorthand for scope ``"first_question"`` with
    that policy (the first question's estimator carries it). ``estimator_options``: keyword arguments
    of every node's ``ConsensusEstimator`` (its ``half_trust`` comes from the retirement's, unless
    given here).
    """

    def __init__(
        self,
        tasks: Mapping[str, Mapping[str, Any]],
        *,
        first_task: str | None = None,
        retirement: WorkflowRetirement | Mapping[str, Any] | None = None,
        policy: RetirementPolicy | None = None,
        estimator_options: Mapping[str, Any] | None = None,
    ) -> None:
        self.tasks = {key: dict(task) for key, task in tasks.items()}
        self.first_task = first_task or next(iter(self.tasks), "")
        check_tree(self.tasks, self.first_task)
        if policy is not None:
            if retirement is not None:
                raise ValueError("give either policy (first-question scope) or retirement, not both")
            retirement = WorkflowRetirement(scope="first_question", policy=policy, half_trust=defaults.HALF_TRUST)
        if not isinstance(retirement, WorkflowRetirement):
            retirement = WorkflowRetirement.from_settings(retirement, self.tasks, self.first_task)
        self.retirement = retirement
        self.estimator_options = dict(estimator_options or {})
        node_options = {"half_trust": retirement.half_trust} | self.estimator_options
        self._order = _topological_order(self.tasks, self.first_task)
        first_policy = retirement.policy if retirement.scope == "first_question" else None
        self.estimators: dict[str, ConsensusEstimator | list[ConsensusEstimator]] = {}
        self.boxes: dict[str, BoxEngine] = {}  # "<drawing task>.<tool index>" → engine
        for key, task in self.tasks.items():
            kind = task.get("type")
            if kind == "single":
                self.estimators[key] = ConsensusEstimator(
                    len(task["answers"]), policy=first_policy if key == self.first_task else None,
                    **node_options)
            elif kind == "multiple":
                self.estimators[key] = [ConsensusEstimator(2, **node_options)
                                        for _ in task["answers"]]
            elif kind == DRAWING_TYPE:
                for index, _ in enumerate(task["tools"]):
                    # The workflow decides; a box engine never retires a subject on its own.
                    self.boxes[f"{key}.{index}"] = BoxEngine(policy=RetirementPolicy([]))
        self._subjects: dict[Hashable, _SubjectState] = {}

    # ------------------------------------------------------------------ input
    def _check(self, task_key: str, value: Any) -> None:
        task = self.tasks[task_key]
        n = len(task["answers"])
        if task["type"] == "single":
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < n:
                raise ValueError(f"task {task_key!r}: answer must be an integer 0..{n - 1}")
        else:
            if not isinstance(value, Sequence) or isinstance(value, str) or any(
                    isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < n
                    for v in value):
                raise ValueError(f"task {task_key!r}: answer must be a list of integers "
                                 f"0..{n - 1}")

    def _marks(self, task_key: str, value: Any) -> dict[int, list[tuple[float, float, float, float]]]:
        """A drawing task's marks, by tool: ``[{"tool", "x", "y", "width", "height"}]``."""
        tools = len(self.tasks[task_key]["tools"])
        if not isinstance(value, Sequence) or isinstance(value, str):
            raise ValueError(f"task {task_key!r}: marks must be a list")
        out: dict[int, list[tuple[float, float, float, float]]] = {i: [] for i in range(tools)}
        for mark in value:
            if not isinstance(mark, Mapping):
                raise ValueError(f"task {task_key!r}: each mark needs tool, x, y, width and height")
            tool = mark.get("tool", 0)
            if isinstance(tool, bool) or not isinstance(tool, int) or not 0 <= tool < tools:
                raise ValueError(f"task {task_key!r}: unknown tool {tool!r}")
            try:
                box = tuple(float(mark[name]) for name in ("x", "y", "width", "height"))
            except (KeyError, TypeError, ValueError):
                raise ValueError(f"task {task_key!r}: each mark needs numeric x, y, width and height") from None
            if not all(np.isfinite(box)) or box[2] <= 0 or box[3] <= 0:
                raise ValueError(f"task {task_key!r}: a mark needs finite numbers and a positive size")
            out[tool].append(box)  # type: ignore[arg-type]
        return out

    def add_classification(
        self,
        subject: Hashable,
        volunteer: Hashable,
        annotations: Sequence[Mapping[str, Any]],
        *,
        counts: bool = True,
        gold: Mapping[str, Any] | None = None,
    ) -> WorkflowDecision:
        """Take one classification: ``annotations`` is ``[{"task": key, "value": ...}]`` (an answer
        index, a list of indices, or a drawing task's marks).

        Every annotation is validated before any is applied, so a bad one changes nothing.
        ``gold`` maps task keys to their true value on a gold subject (marks for a drawing task).
        """
        marks: dict[str, dict[int, list]] = {}
        for ann in annotations:
            if not isinstance(ann, Mapping) or "task" not in ann or "value" not in ann:
                raise ValueError("each annotation needs 'task' and 'value'")
            if ann["task"] not in self.tasks:
                raise ValueError(f"unknown task {ann['task']!r}")
            if ann["task"] in self.estimators:
                self._check(ann["task"], ann["value"])
            elif self.tasks[ann["task"]].get("type") == DRAWING_TYPE:
                marks[ann["task"]] = self._marks(ann["task"], ann["value"])
        gold = dict(gold or {})
        gold_marks: dict[str, dict[int, list]] = {}
        for key, value in gold.items():
            if key in self.estimators:
                self._check(key, value)
            elif self.tasks.get(key, {}).get("type") == DRAWING_TYPE:
                gold_marks[key] = self._marks(key, value)
        state = self._subjects.get(subject)
        if state is None:
            state = self._subjects[subject] = _SubjectState()
        if gold:
            state.gold = True
        counted = bool(counts) and state.retired is None
        if counted:
            state.n_counted += 1
        out: dict[str, Decision | list[Decision]] = {}
        box_results: dict[str, BoxResult] = {}
        for ann in annotations:
            key, value = ann["task"], ann["value"]
            est = self.estimators.get(key)
            if isinstance(est, ConsensusEstimator):
                out[key] = est.add_answer(subject, volunteer, int(value), counts=counted, gold=gold.get(key))
            elif est is not None:
                chosen = set(value)
                truth = gold.get(key)
                out[key] = [e.add_answer(subject, volunteer, int(j in chosen), counts=counted,
                                         gold=None if truth is None else int(j in set(truth)))
                            for j, e in enumerate(est)]
            elif key in marks:
                truth_marks = gold_marks.get(key)
                for tool, boxes in marks[key].items():
                    name = f"{key}.{tool}"
                    box_results[name] = self.boxes[name].add_classification(
                        str(subject), str(volunteer), boxes, counts=counted,
                        gold=None if truth_marks is None else truth_marks[tool])
        # The box engines' results of this very classification are their state now: reused, not rebuilt.
        risks = self._task_risks(subject, box_results)
        newly = False
        if counted and not state.gold:
            if self.retirement.scope == "first_question":
                reason = self._first_question_reason(subject)
            else:
                reason = self._decide(subject, state, risks)
            if reason is not None and state.retired is None:
                self._retire_everywhere(subject, reason)
                newly = True
                # Retiring credits the box volunteers from this subject's consensus, which moves its
                # boxes and risks: what is reported is the state after that, rebuilt.
                box_results = {name: self.boxes[name].result(str(subject)) for name in box_results}
                risks = self._task_risks(subject, box_results)
        return WorkflowDecision(subject, out, state.retired, newly, counted, risks, box_results)

    # ------------------------------------------------------------------ deciding
    def _first_question_reason(self, subject: Hashable) -> str | None:
        est = self.estimators.get(self.first_task)
        return est.retirement_reason(subject) if isinstance(est, ConsensusEstimator) else None

    def n_established(self, subject: Hashable) -> float:
        """What the guard counts for this subject: its classifications of volunteers of established
        skill, as the first question's estimator weighed them (``SubjectSummary.n_established``);
        every counted classification where the first task is a drawing."""
        est = self.estimators.get(self.first_task)
        if est is None:
            return float(self.n_counted(subject))
        return (est if isinstance(est, ConsensusEstimator) else est[0]).subject_n_established(subject)

    def _decide(self, subject: Hashable, state: _SubjectState, risks: list[TaskRisk]) -> str | None:
        """Whole-workflow scope: the reason to retire now, or None."""
        r = self.retirement
        established = self.n_established(subject)
        if state.n_counted < r.min_classifications or established < r.min_classifications:
            return None
        unsettled = [t.task for t in risks if not t.settled]
        previously = state.unsettled
        state.unsettled = unsettled
        if not unsettled:
            # The task that settled last: among those unsettled at the last look, the one closest
            # to its bar now (all of them when none was: the guard held until now).
            candidates = [t for t in risks if t.bar is not None and (not previously or t.task in previously)]
            last = max(candidates, key=lambda t: (t.weighted_risk / t.bar, t.task))
            return f"{CONSENSUS_REASON}:{last.task}"
        if min(state.n_counted, established) >= r.budget:
            return LIMIT_REASON
        return None

    def _retire_everywhere(self, subject: Hashable, reason: str) -> None:
        """Mark the subject retired in the workflow and in every node and box engine that knows it
        (their "retired" learning and box consensus credit happen now)."""
        self._subjects[subject].retired = reason
        for est in self.estimators.values():
            for node in est if isinstance(est, list) else [est]:
                node.retire(subject, reason)
        for engine in self.boxes.values():
            engine.retire(str(subject), reason)

    def retire(self, subject: Hashable, reason: str) -> bool:
        """Retire a subject from outside (the machine's retirement): False if gold, unknown or
        already retired."""
        state = self._subjects.get(subject)
        if state is None or state.retired is not None or state.gold:
            return False
        self._retire_everywhere(subject, reason)
        return True

    def refit(self) -> list[Hashable]:
        """Batch EM refit of every question node (warm-started), then retirement looked at again
        for every active subject. Returns the subjects retired by it, in a stable order."""
        first_question = self.retirement.scope == "first_question"
        # A node's answers teach its skills in proportion to the subject's reach of it: a galaxy
        # that is surely smooth says nothing of how well its volunteers judge spiral arms.
        reach = {subject: self.reach(subject) for subject in self._subjects}
        for key, est in self.estimators.items():
            weights = None if key == self.first_task else {subject: r[key] for subject, r in reach.items()}
            for node in est if isinstance(est, list) else [est]:
                node.refit(retire=first_question and key == self.first_task, subject_weights=weights)
        newly: list[Hashable] = []
        for subject, state in self._subjects.items():
            if state.retired is not None or state.gold:
                continue
            reason = self._first_question_reason(subject) if first_question else self._decide(subject, state, self.task_risks(subject))
            if reason is not None:
                self._retire_everywhere(subject, reason)
                newly.append(subject)
        return newly

    # ------------------------------------------------------------------ results
    def _question_posterior(self, subject: Hashable, key: str) -> np.ndarray:
        """(K,) for single choice, (K, 2) for multiple choice; the prior where nobody answered."""
        est = self.estimators[key]
        if isinstance(est, ConsensusEstimator):
            return est.subject_posterior(subject)
        return np.stack([e.subject_posterior(subject) for e in est])

    def reach(self, subject: Hashable, posteriors: Mapping[str, np.ndarray] | None = None) -> dict[str, float]:
        """Each task's posterior probability that a volunteer reaches it on this subject."""
        reach = dict.fromkeys(self._order, 0.0)
        reach[self.first_task] = 1.0
        for key in self._order:
            task = self.tasks[key]
            if task.get("type") == "single":
                posterior = posteriors[key] if posteriors is not None else self._question_posterior(subject, key)
                for answer, p in zip(task["answers"], posterior, strict=True):
                    if answer.get("next") is not None:
                        reach[answer["next"]] += reach[key] * float(p)
            elif task.get("next") is not None:
                reach[task["next"]] += reach[key]
        return {key: min(1.0, value) for key, value in reach.items()}

    def _box_state(self, subject: Hashable, key: str, results: Mapping[str, BoxResult]) -> tuple[float, int]:
        risk, answers = 0.0, 0
        for index, _ in enumerate(self.tasks[key]["tools"]):
            name = f"{key}.{index}"
            result = results.get(name)
            if result is None:
                engine = self.boxes[name]
                if str(subject) not in engine:
                    risk += engine.unseen_risk()
                    continue
                result = engine.result(str(subject))
            risk += float(result.expected_risk)
            answers = max(answers, result.n_counted)
        return risk, answers

    def task_risks(self, subject: Hashable) -> list[TaskRisk]:
        """Every question and drawing task of the tree, in the tree's order (see the module)."""
        return self._task_risks(subject, {})

    def _task_risks(self, subject: Hashable, box_results: Mapping[str, BoxResult]) -> list[TaskRisk]:
        posteriors = {key: self._question_posterior(subject, key) for key in self.estimators}
        reach = self.reach(subject, posteriors)
        bars = self.retirement.bars if self.retirement.scope == "workflow" else {}
        out = []
        for key in self._order:
            task = self.tasks[key]
            if key in self.estimators:
                posterior = posteriors[key]
                risk = float(1.0 - posterior.max()) if posterior.ndim == 1 else float(
                    (1.0 - posterior.max(axis=1)).sum())
                est = self.estimators[key]
                answers = (est if isinstance(est, ConsensusEstimator) else est[0]).subject_n_counted(subject)
                kind = "question"
            elif task.get("type") == DRAWING_TYPE:
                risk, answers = self._box_state(subject, key, box_results)
                kind = "drawing"
            else:
                continue
            out.append(TaskRisk(key, kind, reach[key], risk, reach[key] * risk, bars.get(key), answers))
        return out

    def value(self, subject: Hashable, risks: Sequence[TaskRisk] | None = None) -> float:
        """What one more classification of this subject is worth, in bits: the sum over its
        unsettled required tasks (scope "first_question": the first question alone) of

        - for a question node, its reach times the information one more answer from a newcomer
          gives about its truth: the mutual information of truth and answer under the node's
          posterior p and the crowd's pooled confusion matrix π (the skill prior a refit learns),
          H(Σ_t p_t π[t, ·]) − Σ_t p_t H(π[t, ·]); a multiple-choice node sums its yes/no parts;
        - for a drawing task, its reach times its expected errors over (counted drawings + 1): the
          share of them one more independent look removes when errors average out (about one bit
          per object in doubt).

        0 once retired or gold. Why information and not the fall of 1 − max posterior: one answer
        often cannot flip a decision, so the myopic fall of the 0–1 risk is exactly 0 for most
        subjects (every unseen one among them) although a few answers would settle them."""
        state = self._subjects.get(subject)
        if state is not None and (state.retired is not None or state.gold):
            return 0.0
        workflow_scope = self.retirement.scope == "workflow"
        total = 0.0
        for t in self.task_risks(subject) if risks is None else risks:
            if workflow_scope and t.settled:
                continue  # settled (or not required): more answers do not move retirement
            if not workflow_scope and t.task != self.first_task:
                continue
            if t.kind == "drawing":
                total += t.reach * t.risk / (t.answers + 1)
                continue
            est = self.estimators[t.task]
            posterior = self._question_posterior(subject, t.task)
            nodes = [est] if isinstance(est, ConsensusEstimator) else est
            rows = [posterior] if posterior.ndim == 1 else list(posterior)
            bits = sum(_answer_information(p, node.skill_prior) for node, p in zip(nodes, rows, strict=True))
            total += t.reach * bits
        return total

    def retirement_reason(self, subject: Hashable) -> str | None:
        state = self._subjects.get(subject)
        return None if state is None else state.retired

    def retired(self) -> dict[Hashable, str]:
        """Retired subjects and their reasons."""
        return {s: st.retired for s, st in self._subjects.items() if st.retired is not None}

    def n_counted(self, subject: Hashable) -> int:
        state = self._subjects.get(subject)
        return 0 if state is None else state.n_counted

    def posterior(self, subject: Hashable, task_key: str) -> list[float] | list[list[float]]:
        est = self.estimators[task_key]
        if isinstance(est, ConsensusEstimator):
            return est.subject_posterior(subject).tolist()
        return [e.subject_posterior(subject).tolist() for e in est]

    # ------------------------------------------------------------------ state
    def to_dict(self) -> dict:
        return {
            "format": "chorus-workflow/2",
            "tasks": self.tasks,
            "first_task": self.first_task,
            "retirement": self.retirement.to_dict(),
            "estimator_options": self.estimator_options,
            "estimators": {k: (e.to_dict() if isinstance(e, ConsensusEstimator)
                               else [x.to_dict() for x in e])
                           for k, e in self.estimators.items()},
            "boxes": {k: e.to_dict() for k, e in self.boxes.items()},
            "subjects": [[s, st.n_counted, st.retired, st.gold, st.unsettled]
                         for s, st in self._subjects.items()],
        }

    @classmethod
    def from_dict(cls, data: dict) -> WorkflowAggregator:
        if data.get("format") != "chorus-workflow/2":
            raise ValueError(f"unsupported workflow state format {data.get('format')!r}")
        agg = cls(data["tasks"], first_task=data["first_task"],
                  retirement=WorkflowRetirement.from_dict(data["retirement"]),
                  estimator_options=data["estimator_options"])
        for key, value in data["estimators"].items():
            agg.estimators[key] = (ConsensusEstimator.from_dict(value) if isinstance(value, dict)
                                   else [ConsensusEstimator.from_dict(v) for v in value])
        agg.boxes = {k: BoxEngine.from_dict(v) for k, v in data["boxes"].items()}
        for subject, n, retired, gold, unsettled in data["subjects"]:
            key = tuple(subject) if isinstance(subject, list) else subject
            agg._subjects[key] = _SubjectState(n, retired, gold, unsettled)
        return agg
