"""Workflow versions (projects/versioning.py): what counts as a major change; a draft is edited in
place; a launched workflow's major change becomes a new workflow (the old one paused, its tree, log
and results untouched, the engine of each fed only its own classifications); a minor change stays
in place; bad trees change nothing; the live loop's check names a tree changed behind the builder's
back; the Django admin judges trees the same way; the migration versions existing workflows."""

from __future__ import annotations

import copy
import importlib

import pytest

from projects.errors import InputRejected
from projects.versioning import change_kind, log_tree_problem, plan_tree_change, save_tree
from tests.builder.conftest import TWO_QUESTIONS_AND_DRAWING

pytestmark = pytest.mark.django_db


def _tree() -> dict:
    return copy.deepcopy(TWO_QUESTIONS_AND_DRAWING)


def _edited(edit) -> dict:
    tree = _tree()
    edit(tree["tasks"])
    return tree


@pytest.mark.parametrize(
    ("edit", "kind"),
    [
        (lambda t: t["T0"].update(help="Look closer."), "minor"),
        (lambda t: t["T0"]["answers"][0].update(help="Round, no structure."), "minor"),
        (lambda t: t["T2"]["tools"][0].update(max=9), "minor"),
        (lambda t: t["T1"].update(mirror_swaps=[[0, 1]]), "minor"),
        (lambda t: t["T0"].update(question="  Smooth   or featured? "), "minor"),  # spacing only
        (lambda t: t["T0"].update(question="Round or featured?"), "major"),
        (lambda t: t["T0"]["answers"][1].update(label="Spiral"), "major"),
        (lambda t: t["T0"]["answers"][0].update(next="T1"), "major"),
        (lambda t: t["T0"]["answers"].reverse(), "major"),
        (lambda t: t["T0"]["answers"].append({"label": "Star"}), "major"),
        (lambda t: t["T2"]["tools"][0].update(label="Galaxy"), "major"),
        (lambda t: t["T1"].update(type="multiple", next="T2"), "major"),
        (lambda t: t.update(T3={"type": "drawing", "instruction": "x", "tools": [{"type": "rectangle", "label": "y"}]}), "major"),
    ],
)
def test_what_changes_the_meaning_of_an_answer_is_major(edit, kind) -> None:
    assert change_kind(_tree(), _edited(edit)) == kind
    assert change_kind(_tree(), _tree()) == "none"


def test_a_draft_is_edited_in_place_and_every_tree_is_kept(draft, people) -> None:
    from projects.models import WorkflowVersion

    workflow = draft()
    assert workflow.version_text == "1.0" and workflow.launched_at is None and not workflow.active
    saved = save_tree(workflow, _tree(), people["scientist"])
    assert (saved.workflow.pk, saved.change, saved.new_workflow, saved.workflow.version_text) == (workflow.pk, "major", False, "2.0")
    saved = save_tree(saved.workflow, _edited(lambda t: t["T0"].update(help="Closer.")), people["scientist"])
    assert (saved.workflow.pk, saved.change, saved.workflow.version_text) == (workflow.pk, "minor", "2.1")
    assert save_tree(saved.workflow, saved.workflow.tasks).change == "none"
    history = list(WorkflowVersion.objects.filter(workflow=workflow).order_by("major", "minor"))
    assert [(v.major, v.minor, v.change) for v in history] == [(1, 0, "created"), (2, 0, "major"), (2, 1, "minor")]
    assert history[0].tasks["tasks"]["T0"]["question"] == "Your first question" and history[2].created_by == people["scientist"]
    workflow.refresh_from_db()
    assert workflow.tasks["tasks"]["T0"]["help"] == "Closer."


def _launched_with_votes(draft, make_votes: bool = True):
    """A launched workflow of the two-question tree with 4 subjects, classified by 3 volunteers."""
    from django.core.files.base import ContentFile

    from classifications.models import Volunteer
    from classifications.services import submit_classification
    from projects.authoring import launch
    from projects.models import Subject, SubjectSet
    from projects.services import add_subject_image, link_subject_set
    from tests.builder.conftest import image_bytes

    workflow = draft(tasks=_tree())
    subject_set = SubjectSet.objects.create(project=workflow.project, name="set")
    for i in range(4):
        subject = Subject.objects.create(subject_set=subject_set, external_id=f"s{i}", gold={"T0": 1} if i == 0 else None)
        add_subject_image(subject, 0, f"s{i}.png", ContentFile(image_bytes()))
    link_subject_set(workflow, subject_set)
    launch(workflow, None)
    workflow.refresh_from_db()
    if make_votes:
        for v in range(3):
            volunteer = Volunteer.objects.create()
            for state in workflow.subject_states.all():
                submit_classification(volunteer, {
                    "workflow": workflow.pk, "subject": state.subject_id, "idempotency_key": f"vote-{v}-{state.subject_id}",
                    "annotations": [{"task": "T0", "value": 1}, {"task": "T1", "value": v % 2}, {"task": "T2", "value": []}],
                })
    return workflow


def test_a_major_change_after_launch_makes_a_new_workflow_and_never_reinterprets_the_old_answers(draft, people) -> None:
    from classifications.models import Classification, Volunteer
    from classifications.services import _WORKFLOW_CACHE, ClassificationRejected, submit_classification
    from live.models import WorkflowAggregation
    from live.services import apply_pending
    from projects.models import AdminAction, SubjectWorkflowState, Workflow

    old = _launched_with_votes(draft)
    old.retirement = {"bar": 0.05, "min": 2}
    old.gold_feedback_rate = 0.25
    old.save()
    assert apply_pending(old.pk).applied == 12
    old_posteriors = dict(SubjectWorkflowState.objects.filter(workflow=old).values_list("subject_id", "posterior"))
    # The bar question's answers change places: old "Bar" votes must not become "No bar" votes.
    swapped = _edited(lambda t: t["T1"].update(answers=[{"label": "No bar", "next": "T2"}, {"label": "Bar", "next": "T2"}]))
    plan = plan_tree_change(old, swapped)
    assert old.version_text == "2.0"  # the draft's tree was saved once before launch
    assert (plan.change, plan.new_workflow, plan.version) == ("major", True, "3.0")
    saved = save_tree(old, swapped, people["scientist"])
    new = saved.workflow
    assert saved.new_workflow and new.pk != old.pk and new.version_text == "3.0" and new.previous_version_id == old.pk
    old.refresh_from_db()
    assert not old.active and old.tasks == _tree() and old.version_text == "2.0"
    assert new.active and new.tasks == swapped and new.launched_at is not None
    assert (new.retirement, new.gold_feedback_rate, new.name) == (old.retirement, 0.25, old.name)
    assert set(new.subject_sets.all()) == set(old.subject_sets.all())
    # A fresh queue: every subject, nothing counted, gold flags from the new tree.
    states = SubjectWorkflowState.objects.filter(workflow=new)
    assert states.count() == 4 and not states.filter(classification_count__gt=0).exists() and states.filter(is_gold=True).count() == 1
    assert Classification.objects.filter(workflow=old).count() == 12 and not Classification.objects.filter(workflow=new).exists()
    assert set(AdminAction.objects.filter(workflow=old).values_list("action", flat=True)) >= {"superseded"}
    assert AdminAction.objects.get(workflow=new, action="new_version").details == {"of_workflow": old.pk, "previous_version": "2.0"}

    # Volunteers: the old workflow takes nothing more; the new one judges answers by its own tree.
    _WORKFLOW_CACHE.clear()
    volunteer = Volunteer.objects.create()
    subject_id = states.first().subject_id
    with pytest.raises(ClassificationRejected, match="paused"):
        submit_classification(volunteer, {"workflow": old.pk, "subject": subject_id, "idempotency_key": "late-old-1",
                                          "annotations": [{"task": "T0", "value": 0}, {"task": "T2", "value": []}]})
    submit_classification(volunteer, {"workflow": new.pk, "subject": subject_id, "idempotency_key": "new-tree-1",
                                      "annotations": [{"task": "T0", "value": 1}, {"task": "T1", "value": 1}, {"task": "T2", "value": []}]})
    # Each engine is fed its own log only: the old results stay as they were.
    assert apply_pending(new.pk).applied == 1 and apply_pending(old.pk).applied == 0
    assert dict(SubjectWorkflowState.objects.filter(workflow=old).values_list("subject_id", "posterior")) == old_posteriors
    new_states = SubjectWorkflowState.objects.filter(workflow=new)
    assert new_states.exclude(posterior=None).count() == 1
    assert WorkflowAggregation.objects.get(workflow=new).applied_seq == 1
    assert log_tree_problem(old) is None and log_tree_problem(new) is None
    # The replaced version cannot be edited any more (409), nor launched again.
    with pytest.raises(InputRejected) as refused:
        save_tree(old, _tree())
    assert refused.value.status == 409 and "replaced this one" in refused.value.errors["workflow"][0]
    assert Workflow.objects.filter(project=old.project).count() == 2


def test_launched_without_classifications_a_major_change_is_still_a_new_version(draft) -> None:
    workflow = _launched_with_votes(draft, make_votes=False)
    assert workflow.active and workflow.launched_at is not None
    saved = save_tree(workflow, _edited(lambda t: t["T0"].update(question="Round or featured?")))
    assert saved.new_workflow and saved.workflow.version_text == "3.0"


def test_a_minor_change_after_launch_stays_in_place(draft) -> None:
    from classifications.models import Classification

    workflow = _launched_with_votes(draft)
    saved = save_tree(workflow, _edited(lambda t: (t["T0"].update(help="Spiral arms count as featured."), t["T2"]["tools"][0].update(max=8))))
    assert (saved.workflow.pk, saved.change, saved.new_workflow, saved.workflow.version_text) == (workflow.pk, "minor", False, "2.1")
    assert Classification.objects.filter(workflow=workflow).count() == 12
    assert saved.workflow.tasks["tasks"]["T2"]["tools"][0]["max"] == 8


@pytest.mark.parametrize(
    ("tree", "field", "message"),
    [
        ({"first_task": "T0", "tasks": {}}, "tasks", "non-empty"),
        (_edited(lambda t: t["T0"]["answers"][0].update(next="T9")), "tasks", "next task 'T9' does not exist"),
        (_edited(lambda t: t["T2"].update(next="T0")), "tasks", "cycle"),
        (_edited(lambda t: t["T2"]["tools"][0].update(min=4, max=2)), "tasks", "min <= max"),
        (_edited(lambda t: t["T0"].update(question="nul \x00 here")), "tasks", "NUL"),
        ("not a tree", "tasks", "must be an object"),
    ],
)
def test_a_bad_tree_is_refused_by_field_and_changes_nothing(draft, tree, field, message) -> None:
    from projects.models import WorkflowVersion

    workflow = draft(tasks=_tree())
    before = (workflow.tasks, workflow.version_text, WorkflowVersion.objects.filter(workflow=workflow).count())
    with pytest.raises(InputRejected) as refused:
        save_tree(workflow, tree)
    assert refused.value.status == 400 and any(message in problem for problem in refused.value.errors[field])
    workflow.refresh_from_db()
    assert (workflow.tasks, workflow.version_text, WorkflowVersion.objects.filter(workflow=workflow).count()) == before


def test_a_tree_that_its_retirement_settings_do_not_fit_is_refused(draft) -> None:
    workflow = draft(tasks=_tree())
    workflow.retirement = {"required": ["T1"], "bar": 0.05}
    workflow.save()
    without_t1 = _edited(lambda t: (t.pop("T1"), t["T0"]["answers"][1].update(next="T2")))
    with pytest.raises(InputRejected) as refused:
        save_tree(workflow, without_t1)
    assert "retirement" in refused.value.errors and "change them first" in refused.value.errors["retirement"][0]
    workflow.refresh_from_db()
    assert "T1" in workflow.tasks["tasks"]


def test_the_live_loops_check_names_a_tree_changed_behind_the_builders_back(draft) -> None:
    from projects.models import Workflow

    workflow = _launched_with_votes(draft)
    assert log_tree_problem(workflow) is None
    Workflow.objects.filter(pk=workflow.pk).update(tasks=_edited(lambda t: t["T0"]["answers"].reverse()))
    workflow.refresh_from_db()
    problem = log_tree_problem(workflow)
    assert problem and f"workflow {workflow.pk}" in problem and "version 2.0" in problem
    # A minor change behind its back (help text) changes no answer's meaning.
    Workflow.objects.filter(pk=workflow.pk).update(tasks=_edited(lambda t: t["T0"].update(help="x")))
    workflow.refresh_from_db()
    assert log_tree_problem(workflow) is None


def _admin_form(workflow, tasks: dict):
    import json

    from django.forms.models import model_to_dict

    from projects.admin import WorkflowForm

    data = model_to_dict(workflow)
    for name in ("tasks", "retirement", "active_learning", "field_guide", "tutorial"):
        data[name] = json.dumps(data[name])
    data["tasks"] = json.dumps(tasks)
    data["subject_sets"] = [s.pk for s in workflow.subject_sets.all()]
    data["active"] = "on" if workflow.active else ""
    return WorkflowForm(data=data, instance=workflow)


def test_the_django_admin_refuses_a_major_change_of_a_launched_workflow_and_versions_the_rest(draft, people, rf) -> None:
    from django.contrib.admin.sites import site

    from projects.admin import WorkflowAdmin
    from projects.models import Workflow

    workflow = _launched_with_votes(draft)
    form = _admin_form(workflow, _edited(lambda t: t["T0"]["answers"].reverse()))
    assert not form.is_valid()
    assert "would reinterpret its classifications" in form.errors["tasks"][0] and "version 3.0" in form.errors["tasks"][0]
    form = _admin_form(workflow, _edited(lambda t: t["T0"].update(help="Admin help.")))
    assert form.is_valid(), form.errors
    request = rf.post("/")
    request.user = people["scientist"]
    WorkflowAdmin(Workflow, site).save_model(request, form.save(commit=False), form, change=True)
    workflow.refresh_from_db()
    assert workflow.version_text == "2.1" and workflow.tasks["tasks"]["T0"]["help"] == "Admin help."
    assert workflow.versions.filter(major=2, minor=1, change="minor").exists()


def test_the_migration_versions_existing_workflows_and_counts_them_launched(make_workflow) -> None:
    from django.apps import apps

    from projects.models import Workflow, WorkflowVersion

    workflow = make_workflow(n=1)
    Workflow.objects.filter(pk=workflow.pk).update(launched_at=None)
    WorkflowVersion.objects.filter(workflow=workflow).delete()
    migration = importlib.import_module("projects.migrations.0004_workflow_versions")
    migration.version_existing_workflows(apps, None)
    workflow.refresh_from_db()
    assert workflow.launched_at == workflow.created_at
    version = WorkflowVersion.objects.get(workflow=workflow)
    assert (version.major, version.minor, version.change, version.tasks) == (1, 0, "created", workflow.tasks)


def test_an_out_of_band_change_before_any_classification_is_no_problem(draft) -> None:
    from projects.models import Workflow

    workflow = _launched_with_votes(draft, make_votes=False)
    Workflow.objects.filter(pk=workflow.pk).update(tasks=_edited(lambda t: t["T0"]["answers"].reverse()))
    workflow.refresh_from_db()
    assert log_tree_problem(workflow) is None
