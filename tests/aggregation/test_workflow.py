"""Whole workflows: question trees node by node, drawing tasks, and retirement by the whole tree."""

from __future__ import annotations

import json

import numpy as np
import pytest

from aggregation import defaults
from aggregation.estimator import ConsensusEstimator
from aggregation.retirement import parse_policy
from aggregation.workflow import SettingsError, WorkflowAggregator, WorkflowRetirement

TASKS = {
    "T0": {"type": "single", "question": "Smooth or featured?",
           "answers": [{"label": "smooth", "next": None},
                       {"label": "featured", "next": "T1"},
                       {"label": "artifact", "next": None}]},
    "T1": {"type": "single", "question": "Edge-on?",
           "answers": [{"label": "yes", "next": "T2"}, {"label": "no", "next": "T2"}]},
    "T2": {"type": "multiple", "question": "Anything odd?", "next": "T3",
           "answers": [{"label": "ring", "next": None}, {"label": "lens", "next": None},
                       {"label": "merger", "next": None}]},
    "T3": {"type": "drawing", "instruction": "Mark the stars", "tools": [{"type": "rectangle", "label": "star"}]},
}
# Skills stay the newcomer's prior (no learning without gold): every answer is 70% right. Every
# volunteer is trusted at once (half_trust 0, the engine before issue 25): these tests are about the
# tree's arithmetic; what trust changes is tested in test_sybil.py.
FIXED = {"learn": ("gold",), "half_trust": 0.0}
BOX = {"tool": 0, "x": 10.0, "y": 10.0, "width": 20.0, "height": 20.0}


def test_each_node_is_aggregated_over_the_volunteers_who_reached_it() -> None:
    agg = WorkflowAggregator(TASKS, policy=parse_policy("min:3,agree:3"), estimator_options={"half_trust": 0.0})
    for v in ("a", "b"):
        agg.add_classification("g1", v, [{"task": "T0", "value": 0}])
    for v in ("c", "d", "e"):
        out = agg.add_classification("g1", v, [{"task": "T0", "value": 1},
                                               {"task": "T1", "value": 0},
                                               {"task": "T2", "value": [0, 2]},
                                               {"task": "T3", "value": [BOX]}])
    assert agg.estimators["T0"].summary("g1").n_counted == 5
    assert agg.estimators["T1"].summary("g1").n_counted == 3  # only c, d, e reached T1
    assert set(agg.estimators["T1"].workers) == {"c", "d", "e"}
    assert out.questions["T1"].retired is None  # first-question scope: only T0 carries the policy
    assert [d.label for d in out.questions["T2"]] == [1, 0, 1]  # ring and merger ticked, lens not
    assert agg.retirement_reason("g1") is None  # the root question has not agreed
    post = agg.posterior("g1", "T0")
    assert post[1] > post[0] > post[2]
    assert agg.boxes["T3.0"].summary("g1").n_counted == 3


def test_gold_and_bad_annotations() -> None:
    agg = WorkflowAggregator(TASKS)
    agg.add_classification("gold", "v", [{"task": "T0", "value": 2}], gold={"T0": 2})
    assert agg.estimators["T0"].worker_state("v")["counts"][2][2] == 1.0
    before = json.dumps(agg.to_dict())
    for bad in ([{"task": "T0", "value": 3}], [{"task": "T2", "value": 1}],
                [{"task": "T0", "value": 0}, {"task": "T1", "value": [1]}],
                [{"task": "T0", "value": 1}, {"task": "T3", "value": [{"tool": 4, "x": 0, "y": 0, "width": 1, "height": 1}]}],
                [{"task": "T0", "value": 1}, {"task": "T3", "value": [{"tool": 0, "x": 0, "y": 0, "width": -1, "height": 1}]}],
                [{"task": "T9", "value": 0}], [{"value": 0}]):
        with pytest.raises(ValueError):
            agg.add_classification("s", "v", bad)
    assert json.dumps(agg.to_dict()) == before  # nothing half-applied
    rebuilt = WorkflowAggregator.from_dict(json.loads(before))
    assert rebuilt.to_dict() == agg.to_dict()
    assert agg.retire("gold", "machine") is False  # gold subjects never retire


def test_bad_trees_are_rejected() -> None:
    with pytest.raises(ValueError, match="unknown task"):
        WorkflowAggregator({"T0": {"type": "single", "question": "?",
                                   "answers": [{"label": "a", "next": "T7"},
                                               {"label": "b", "next": None}]}})
    with pytest.raises(ValueError, match="no question and no drawing"):
        WorkflowAggregator({"T0": {"type": "text"}})
    with pytest.raises(ValueError, match="cycle"):
        WorkflowAggregator({"T0": {"type": "single", "question": "?", "answers": [
            {"label": "a", "next": "T1"}, {"label": "b", "next": None}]},
            "T1": {"type": "drawing", "tools": [{"type": "rectangle"}], "next": "T0"}})


SMALL = {
    "T0": {"type": "single", "question": "?", "answers": [{"label": "disk", "next": "T1"}, {"label": "smooth", "next": None}]},
    "T1": {"type": "single", "question": "?", "answers": [{"label": "cw", "next": None}, {"label": "acw", "next": None}]},
}


def test_tree_risk_is_weighted_by_the_posterior_reach_of_each_node() -> None:
    agg = WorkflowAggregator(SMALL, retirement={"bar": 0.01, "min": 1}, estimator_options=FIXED)
    for volunteer in ("a", "b"):
        agg.add_classification("g", volunteer, [{"task": "T0", "value": 0}, {"task": "T1", "value": 1}])
    risks = {r.task: r for r in agg.task_risks("g")}
    # Two 70%-right answers "disk": P(disk) = 0.49 / (0.49 + 0.09); T1 the same for "acw".
    p_disk = 0.49 / 0.58
    assert risks["T0"].reach == 1.0
    assert risks["T0"].risk == pytest.approx(1 - p_disk)
    assert risks["T1"].reach == pytest.approx(p_disk)
    assert risks["T1"].weighted_risk == pytest.approx(p_disk * (1 - p_disk))
    assert not risks["T1"].settled
    # A galaxy that is surely smooth: T1, never answered, weighs almost nothing.
    for volunteer in "cdefgh":
        agg.add_classification("s", volunteer, [{"task": "T0", "value": 1}])
    risks = {r.task: r for r in agg.task_risks("s")}
    p_disk = 0.3**6 / (0.3**6 + 0.7**6)
    assert risks["T1"].reach == pytest.approx(p_disk)
    assert risks["T1"].risk == pytest.approx(0.5)  # its prior: nobody answered it
    assert risks["T1"].weighted_risk == pytest.approx(0.5 * p_disk)
    assert agg.retirement_reason("s") == "consensus:T0"  # T1 weighed < 0.01 all along; T0 settled last
    assert agg.value("s") == 0.0


def test_whole_workflow_waits_for_the_later_question_that_first_question_retirement_starves() -> None:
    # Everyone says disk (T0 is sure after 6: 0.7^6 / (0.7^6 + 0.3^6) > 0.99); T1 splits 3:3, then agrees.
    votes = [(f"v{i}", 0, t1) for i, t1 in enumerate([0, 1, 0, 1, 0, 1] + [0] * 10)]
    whole = WorkflowAggregator(SMALL, estimator_options=FIXED)
    first = WorkflowAggregator(SMALL, retirement={"scope": "first_question", "policy": "min:3,posterior:0.99,max:40"},
                               estimator_options=FIXED)
    alone = ConsensusEstimator(2, policy=parse_policy("min:3,posterior:0.99,max:40"), **FIXED)
    for volunteer, t0, t1 in votes:
        annotations = [{"task": "T0", "value": t0}, {"task": "T1", "value": t1}]
        w, f = whole.add_classification("g", volunteer, annotations), first.add_classification("g", volunteer, annotations)
        single = alone.add_answer("g", volunteer, t0)
        # The named first-question option is today's rule exactly: T0's estimator alone decides.
        assert f.retired == single.retired and f.counted == single.counted
        if w.retired:
            break
    assert first.retirement_reason("g") == "consensus"
    assert first.estimators["T1"].summary("g").n_counted == 6  # retired with T1 split 3:3
    assert first.posterior("g", "T1") == pytest.approx([0.5, 0.5])
    assert whole.retirement_reason("g") == "consensus:T1"  # T0 was sure well before
    assert whole.estimators["T1"].summary("g").n_counted == 12
    assert whole.posterior("g", "T1")[0] > 0.99


def test_budget_and_gold() -> None:
    agg = WorkflowAggregator(SMALL, retirement={"budget": 4}, estimator_options=FIXED)
    for i, t1 in enumerate([0, 1, 0, 1]):
        out = agg.add_classification("g", f"v{i}", [{"task": "T0", "value": 0}, {"task": "T1", "value": t1}])
    assert out.retired == "limit" and out.newly_retired
    late = agg.add_classification("g", "late", [{"task": "T0", "value": 0}, {"task": "T1", "value": 0}])
    assert not late.counted and agg.estimators["T1"].summary("g").n_counted == 4
    for i in range(10):
        out = agg.add_classification("gold", f"v{i}", [{"task": "T0", "value": 1}], gold={"T0": 1})
    assert out.retired is None  # gold subjects never retire


def test_drawing_only_workflow_retires_on_the_box_engine_risk() -> None:
    tasks = {"T0": {"type": "drawing", "instruction": "Mark every clump", "tools": [{"type": "rectangle", "label": "clump"}]}}
    agg = WorkflowAggregator(tasks)
    assert agg.retirement.min_classifications == defaults.MIN_CLASSIFICATIONS_DRAWING_ONLY
    assert agg.retirement.bars == {"T0": defaults.DRAWING_BAR}
    before = agg.task_risks("img")[0]
    assert before.risk == pytest.approx(agg.boxes["T0.0"].unseen_risk()) and not before.settled
    outs = []
    for i in range(8):
        box = dict(BOX, x=10.0 + 0.3 * i)
        outs.append(agg.add_classification("img", f"v{i}", [{"task": "T0", "value": [box]}]))
        if outs[-1].retired:
            break
    assert outs[-1].retired == "consensus:T0" and 2 <= len(outs) < 8
    risk = agg.task_risks("img")[0]
    assert risk.weighted_risk < defaults.DRAWING_BAR
    assert agg.boxes["T0.0"].retired("img") == "consensus:T0"  # the box engine knows, and credited
    again = WorkflowAggregator.from_dict(json.loads(json.dumps(agg.to_dict())))
    assert again.to_dict() == agg.to_dict()


def test_refit_looks_at_retirement_again_and_replays_deterministically() -> None:
    rng = np.random.default_rng(0)

    def run() -> WorkflowAggregator:
        agg = WorkflowAggregator(SMALL)
        for n in range(600):
            subject, volunteer = f"g{rng.integers(60)}", f"v{rng.integers(15)}"
            t0 = int(rng.random() < 0.3)
            annotations = [{"task": "T0", "value": t0}] + ([{"task": "T1", "value": int(rng.random() < 0.8)}] if t0 == 0 else [])
            agg.add_classification(subject, volunteer, annotations)
            if n % 200 == 199:
                agg.refit()
        return agg

    first = run()
    rng = np.random.default_rng(0)
    second = run()
    assert first.to_dict() == second.to_dict()
    assert first.retired()
    assert all(reason.startswith("consensus:") or reason == "limit" for reason in first.retired().values())


def test_value_ranks_uncertain_subjects_above_settled_ones() -> None:
    agg = WorkflowAggregator(SMALL, estimator_options=FIXED)
    agg.add_classification("split", "a", [{"task": "T0", "value": 0}, {"task": "T1", "value": 0}])
    agg.add_classification("split", "b", [{"task": "T0", "value": 1}])
    for volunteer in "abcde":  # 0.986 sure of smooth: nearly settled
        agg.add_classification("nearly", volunteer, [{"task": "T0", "value": 1}])
    for volunteer in "abcdefgh":
        agg.add_classification("smooth", volunteer, [{"task": "T0", "value": 1}])
    assert agg.retirement_reason("nearly") is None and agg.retirement_reason("smooth") is not None
    assert agg.value("split") > agg.value("nearly") > 0 == agg.value("smooth")
    assert agg.value("unseen") > agg.value("split")  # T1 unknown too


@pytest.mark.parametrize(("settings", "field"), [
    ({"scope": "everything"}, "scope"),
    ({"required": ["T9"]}, "required"),
    ({"required": []}, "required"),
    ({"bar": 0}, "bar"),
    ({"bar": {"T9": 0.1}}, "bar"),
    ({"bar": {"T0": "high"}}, "bar"),
    ({"min": 0}, "min"),
    ({"budget": 2, "min": 3}, "budget"),
    ({"policy": "min:3"}, "policy"),
    ({"scope": "first_question", "bar": 0.1}, "bar"),
    ({"scope": "first_question", "policy": "sometimes:3"}, "policy"),
    ({"colour": "red"}, "retirement"),
])
def test_bad_settings_name_their_field(settings: dict, field: str) -> None:
    with pytest.raises(SettingsError) as error:
        WorkflowRetirement.from_settings(settings, TASKS, "T0")
    assert any(problem.startswith(f"{field}:") for problem in error.value.problems), error.value.problems


def test_settings_resolve_every_default() -> None:
    resolved = WorkflowRetirement.from_settings({"bar": {"T3": 0.05}}, TASKS, "T0").to_dict()
    assert resolved == {"scope": "workflow", "required": ["T0", "T1", "T2", "T3"],
                        "bars": {"T0": 0.01, "T1": 0.01, "T2": 0.01, "T3": 0.05}, "min": 3, "budget": 40,
                        "half_trust": defaults.HALF_TRUST}
    only = WorkflowRetirement.from_settings({"required": ["T0"], "bar": 0.02}, TASKS, "T0")
    assert only.bars == {"T0": 0.02}
    agg = WorkflowAggregator(TASKS, retirement=only)
    assert [r.task for r in agg.task_risks("x") if r.bar is not None] == ["T0"]
