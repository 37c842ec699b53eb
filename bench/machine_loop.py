"""The machine in the loop, end to end on GZ1: one simulated crowd, three ways of using it.

    .venv/bin/python bench/machine_loop.py                     # 700 galaxies: about 10 minutes here
    .venv/bin/python bench/machine_loop.py --galaxies 6493 --gold-share 0.05 --a-sample 500 \
        --retrain-every 100 --warm-epochs 5 --max-seconds 4200 \
        --out bench/results/machine_loop_6493.json            # every GZ1 galaxy: ~35 min here
    .venv/bin/python bench/machine_loop.py --tree --galaxies 0 --gold-share 0.05 --retrain-every 100 \
        --warm-epochs 5 --modes c --max-seconds 6000 --seed 0  # the two-question tree, every usable galaxy
    .venv/bin/python bench/machine_loop.py --tree --galaxies 150 --volunteers 60 --gold-share 0.3 \
        --image-size 32 --pretrain-epochs 0 --epochs 2 --warm-epochs 1 --min-steps 10 --min-train 20 \
        --retrain-every 20 --min-gold-subjects 5 --a-draws 20 --modes c --max-seconds 300 \
        --out /tmp/machine_loop_tree_small.json                # a CI-size run of it: a few minutes

``--tree``: GZ1's two-question tree of ``bench/engine_tree.py`` (T0 smooth / features or disk /
merger / star or artifact; T1 edge-on / clockwise / anticlockwise for disks, ``"mirror_swaps": [[1,
2]]``; the truth of both from ``labels.csv``), its simulated volunteers (imported from there: a
difficulty per galaxy and question from real Galaxy Zoo vote splits, a skill per volunteer and
question from the real crowds; a volunteer answers T1 after "features or disk"), gold for both
questions (T1 for the gold disks), and whole-workflow retirement (the library's bars, ``--bar``);
``--galaxies 0`` takes all 6,608. (a) is computed without the platform: 40 volunteers per galaxy,
each question's plurality (T1 among those of the 40 who answered it), its expectation over
``--a-draws`` random draws of 40 (``engine_tree.mode_a``; a plurality of 3 or 4 answers has no closed
form like the binary majority's); (b) the engine alone and (c) the engine + CNN (one head per
question, each gated on its own gold) run on the platform. Per question: human answers per retired
galaxy, accuracy of the retired labels (the argmax of the engine's posterior; T1 on the true disks)
and the paired difference with (a)'s expectation on the same galaxies; ``votes_ratio`` is (a)'s
human answers per galaxy over both questions (40 + its expected T1 answers) over (c)'s. Each seed's
``{"seed", "votes_ratio", "questions": {"T0": {"a", "c", ...}, "T1": ...}}`` is merged into
``bench/results/machine_loop_tree.json`` (``--out``) beside the other seeds', with its full results
under ``runs``.

With ``--a-sample N``, (a) runs on the platform for a random N of the galaxies only (its votes per
galaxy are 40 by construction; 40 votes for 6,000 galaxies is 240,000 submissions), and is also
computed without the platform for every galaxy, from the same crowd (``a_offline_all``, whatever
``--modes``): once with one random draw of 40 volunteers per galaxy (``accuracy_of_retired``) and
exactly, averaged over every draw (``accuracy_expected_over_draws``, a hypergeometric tail per
galaxy, ``aggregation.evaluation.majority_accuracy``): which 40 of the 250 volunteers one draw
happens to take moves (a) by 0.15–0.2 points on these crowds, as much as the gaps it is compared with.
Each mode's retired labels are compared with (a) galaxy by galaxy (``paired``: the difference of
accuracies on the galaxies that mode retired, its standard error and 95% interval, against the draw
and against the exact expectation; ``aggregation.evaluation.paired_accuracy_difference``), and kept
per galaxy (``outcomes``: index in this seed's galaxy list, retirement reason, label).

(a) Galaxy Zoo 2's way: every galaxy gets 40 votes (policy ``max:40``), the label is their majority;
(b) the engine alone (policy ``min:3,posterior:0.99,max:40``, the platform's engine settings; the
    posterior threshold set by ``--engine-posterior``; skills learned online, the class prior
    re-estimated at each refit, a refit every ``--refit-every`` votes as the beat schedule would);
(c) the same engine plus the CNN and active learning (``Workflow.active_learning``): retrained every
    ``--retrain-every`` human retirements (48 px, 15 epochs from scratch, 6 warm-started, at least
    ``--min-steps`` optimiser steps either way), predictions
    entering the engine as the machine agent, each version calibrated on the gold galaxies and
    measured on them out of fold (``--calibration-folds``), machine retirement once trained (here:
    gold accuracy >= 0.8 for two versions in a row, within 3 points, and >= ``--min-retire-accuracy``
    on the gold galaxies its versions would have retired so far, replayed; the platform's default bars are 0.9 and 0.98, which a CNN
    trained on a few hundred galaxies does not reach) and above ``--machine-threshold``, humans' queue
    ranked by BALD with 10% exploration.

Task: smooth (GZ1 class 0) versus featured (classes 1–3) on a random subset of the GZ1 galaxies in
../shared/data/galaxies/gz1 (classes 4, 5 left out); 10% of them are gold (their GZ1 label known to
the platform: the held-out test set of the CNN, served to humans last); the accuracy of a retired
galaxy's label is measured against its GZ1 label.

The simulated crowd (the same in a, b and c: the same volunteers, arriving in the same order, each
giving the same answer to the same galaxy):
- Galaxy difficulty from real Galaxy Zoo votes: each galaxy draws a real Galaxy Zoo DECaLS subject
  (../shared/data/zooniverse/gz_decals_smooth_featured_votes.csv, 4,000 subjects, 37–215 votes
  each) whose vote majority is the galaxy's class, and takes its share of votes for that class,
  q = (majority votes + 0.5) / (smooth + featured votes + 1): a galaxy whose real counterpart split
  21 to 19 is as hard for the simulated crowd as it was for the real one. The draw is random within
  the class, so a galaxy's difficulty for the crowd is independent of its image, hence of how sure
  the CNN is (the GZ1 data here has labels, not vote shares): a galaxy the CNN gets wrong is no
  harder for the simulated crowd than any other, where real ambiguous images are hard for both.
- Volunteer skill from real crowds: every worker of the duck and dog crowds
  (../shared/data/crowds, 148 workers with at least 20 answers) gives its accuracy against the
  ground truth, a = (right + 1) / (answers + 2); a simulated volunteer draws one, and its offset
  d = logit(a) − mean logit(a) over the real workers.
- A volunteer answers a galaxy correctly with probability sigmoid(logit(q) + d): an average
  volunteer reproduces the galaxy's real vote share, a good one does better on every galaxy.
- Volunteers arrive at random, each asks the platform's queue (``next_subjects``) for 10 subjects
  and submits them through ``submit_classifications``; real Celery workers apply them (queue
  "aggregation") and train, promote and predict (queue "ml"). Volunteers are slow next to the CNN
  (GZX retrained nightly), so when a retraining is due the crowd waits for it to finish: the wall
  time of (c) includes every training run.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
sys.path[:0] = [str(ROOT / "platform"), str(ROOT)]
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chorus.settings")
os.environ.setdefault("CHORUS_DATA_DIR", "/tmp/chorus-bench-machine")  # its own embedded servers

import engine_tree  # noqa: E402  (bench/: the tree, its truth from labels.csv and its simulated volunteers)
from platform_processes import reset_platform, start_worker  # noqa: E402  (bench/, beside this script)
from real_crowds import logit, real_worker_offsets  # noqa: E402

from aggregation.evaluation import majority_accuracy, paired_accuracy_difference  # noqa: E402
from aggregation.retirement import PosteriorAbove, RetirementPolicy, parse_policy  # noqa: E402
from live.engine import DEFAULT_MACHINE_AGENTS, DEFAULT_POLICY, MACHINE_AGENTS  # noqa: E402  (no Django in it)

BINARY_TASKS = {
    "first_task": "T0",
    "tasks": {
        "T0": {
            "type": "single",
            "question": "Is the galaxy simply smooth and rounded, or does it have features or a disk?",
            "answers": [{"label": "Smooth", "next": None}, {"label": "Features or disk", "next": None}],
        }
    },
}
ENGINE_POSTERIOR = next(rule.threshold for rule in parse_policy(DEFAULT_POLICY).rules if isinstance(rule, PosteriorAbove))


def engine_policy(posterior: float) -> str:
    """(b)'s and (c)'s retirement policy: the platform's default with this posterior threshold."""
    rules = parse_policy(DEFAULT_POLICY).rules
    return str(RetirementPolicy([replace(r, threshold=posterior) if isinstance(r, PosteriorAbove) else r for r in rules]))


def real_vote_shares() -> dict[int, np.ndarray]:
    """Per class (0 smooth, 1 featured): the real DECaLS subjects' vote share for their majority."""
    shares: dict[int, list[float]] = {0: [], 1: []}
    with open(DATA / "zooniverse" / "gz_decals_smooth_featured_votes.csv", encoding="utf-8") as handle:
        for r in csv.DictReader(handle):
            smooth, featured = float(r["smooth"]), float(r["featured_or_disk"])
            if smooth + featured < 5 or smooth == featured:
                continue
            majority = 0 if smooth > featured else 1
            shares[majority].append((max(smooth, featured) + 0.5) / (smooth + featured + 1))
    return {k: np.asarray(v) for k, v in shares.items()}


def gz1_galaxies(n: int, seed: int) -> list[tuple[str, int]]:
    with open(DATA / "galaxies" / "gz1" / "labels.csv", encoding="utf-8") as handle:
        rows = [(r["OBJID"], 0 if r["CLASS"] == "0" else 1) for r in csv.DictReader(handle) if r["CLASS"] in "0123"]
    random.Random(seed).shuffle(rows)
    return rows[:n]


class Crowd:
    """The simulated volunteers: who answers what (see the module docstring)."""

    def __init__(self, labels: np.ndarray, n_volunteers: int, seed: int) -> None:
        rng = np.random.default_rng(seed)
        offsets, shares = real_worker_offsets(), real_vote_shares()
        self.offsets = rng.choice(offsets, n_volunteers)
        self.q = np.array([rng.choice(shares[int(y)]) for y in labels])
        self.p_right = 1 / (1 + np.exp(-(logit(self.q)[None, :] + self.offsets[:, None])))  # volunteers × galaxies
        self.right = rng.random(self.p_right.shape) < self.p_right
        self.labels = labels

    def answer(self, volunteer: int, galaxy: int) -> int:
        y = int(self.labels[galaxy])
        return y if self.right[volunteer, galaxy] else 1 - y

    def annotations(self, volunteer: int, galaxy: int) -> list[dict]:
        return [{"task": "T0", "value": self.answer(volunteer, galaxy)}]

    def describe(self) -> dict:
        return {
            "volunteers": len(self.offsets),
            "mean_p_right": round(float(self.p_right.mean()), 4),
            "galaxy_vote_share_quartiles": [round(float(x), 3) for x in np.quantile(self.q, [0.25, 0.5, 0.75])],
            "volunteer_offset_quartiles": [round(float(x), 3) for x in np.quantile(self.offsets, [0.25, 0.5, 0.75])],
        }


class TreeCrowd(engine_tree.Crowd):
    """The two-question tree's simulated volunteers (``bench/engine_tree.py``: a difficulty per galaxy
    and question from real Galaxy Zoo vote splits, each volunteer's skill per question from the real
    crowds), answering down the tree: T1 after "features or disk"."""

    def annotations(self, volunteer: int, galaxy: int) -> list[dict]:
        a0 = int(self.a0[volunteer, galaxy])
        return [{"task": "T0", "value": a0}] + ([{"task": "T1", "value": int(self.a1[volunteer, galaxy])}] if a0 == engine_tree.DISK else [])


def gold_indices(n_galaxies: int, gold_share: float, rng: random.Random) -> set[int]:
    """Which galaxies are gold: a random ``gold_share`` of them."""
    return set(rng.sample(range(n_galaxies), round(gold_share * n_galaxies)))


def setup_subjects(galaxies: list[tuple[str, int]], gold_share: float, a_sample: int, seed: int,
                   gold_of: Callable[[int], dict] | None = None):
    """The galaxies as subjects (images through Django's storage), gold for a random share (the
    experts' answers: ``gold_of(index)``, by default ``{"T0": label}``), in two subject sets: a random
    ``a_sample`` of the non-gold galaxies (all of them when 0), the only set that mode (a) links, and
    the rest."""
    from django.core.files import File

    from projects.models import Project, Subject, SubjectSet
    from projects.services import add_subject_image

    project = Project.objects.create(slug="machine-loop-bench", title="Machine loop benchmark (GZ1)")
    rng = random.Random(seed)
    gold = gold_indices(len(galaxies), gold_share, rng)
    non_gold = [i for i in range(len(galaxies)) if i not in gold]
    sample = set(non_gold if not a_sample or a_sample >= len(non_gold) else rng.sample(non_gold, a_sample))
    sets = [SubjectSet.objects.create(project=project, name="GZ1: sample for (a)")]
    if len(sample) < len(galaxies):
        sets.append(SubjectSet.objects.create(project=project, name="GZ1: the rest"))
    subject_ids = []
    for i, (objid, label) in enumerate(galaxies):
        subject = Subject.objects.create(
            subject_set=sets[0] if i in sample else sets[-1], external_id=objid, metadata={"#gz1_label": label},
            gold=(gold_of(i) if gold_of is not None else {"T0": label}) if i in gold else None,
        )
        with open(DATA / "galaxies" / "gz1" / "images" / f"{objid}.jpeg", "rb") as handle:
            add_subject_image(subject, 0, f"{objid}.jpeg", File(handle))
        subject_ids.append(subject.pk)
    return project, sets, subject_ids, gold


def majority_outcomes(crowd: Crowd, galaxies: list[int], votes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """GZ2's way without the platform, per given galaxy: whether the majority (ties: smooth) of the
    answers of ``votes`` distinct volunteers drawn at random, as the platform's queue would send them,
    is right; and the exact probability of that over every draw (``aggregation.evaluation``)."""
    rng = np.random.default_rng(seed)
    drawn = np.zeros(len(galaxies), dtype=bool)
    for i, g in enumerate(galaxies):
        who = rng.choice(len(crowd.offsets), votes, replace=False)
        featured = sum(crowd.answer(int(v), g) for v in who)
        drawn[i] = int(featured > votes / 2) == crowd.labels[g]
    expected = majority_accuracy(crowd.right[:, galaxies].sum(axis=0), len(crowd.offsets), votes, crowd.labels[galaxies])
    return drawn, expected


def majority_summary(drawn: np.ndarray, expected: np.ndarray, votes: int) -> dict:
    """(a)'s figures from ``majority_outcomes``: its accuracy with one draw of volunteers per galaxy,
    and its exact expected accuracy over the draws (free of which volunteers happened to be drawn)."""
    return {"galaxies": len(drawn), "human_votes_per_retired_galaxy": float(votes),
            "accuracy_of_retired": round(float(drawn.mean()), 4) if len(drawn) else 0.0,
            "accuracy_expected_over_draws": round(float(expected.mean()), 4) if len(drawn) else 0.0}


def offline_majority(crowd: Crowd, galaxies: list[int], votes: int, seed: int) -> dict:
    """(a) without the platform on the given galaxies (``majority_summary``)."""
    return majority_summary(*majority_outcomes(crowd, galaxies, votes, seed), votes)


def paired_against_a(right: dict[int, bool], a_drawn: np.ndarray, a_expected: np.ndarray, non_gold: list[int]) -> dict:
    """A mode's retired labels (``right``: galaxy index -> whether right) against (a) without the
    platform (``majority_outcomes`` on ``non_gold``) on the same galaxies, paired galaxy by galaxy
    (``aggregation.evaluation``): against (a)'s one draw and against its exact expectation."""
    position = {g: i for i, g in enumerate(non_gold)}
    galaxies = [g for g in right if g in position]
    mine = np.array([right[g] for g in galaxies], dtype=bool)
    at = [position[g] for g in galaxies]

    def rounded(value: object) -> object:
        return round(value, 5) if isinstance(value, float) else [round(x, 5) for x in value] if isinstance(value, list) else value

    return {name: {k: rounded(v) for k, v in paired_accuracy_difference(a[at], mine).to_dict().items()}
            for name, a in (("vs_a_drawn", a_drawn), ("vs_a_expected", a_expected))}


def make_workflow(project, subject_sets, name: str, policy: str | None, active_learning: dict, machine_agents: str,
                  estimator: dict | None = None, tasks: dict | None = None, retirement: dict | None = None):
    """A workflow over the subject sets: by default the GZX comparison on one question, the
    first-question rule with ``policy``, named (the platform default is the whole workflow); with
    ``tasks`` and ``retirement`` (a whole-workflow one), that tree."""
    from projects.models import SubjectWorkflowState
    from projects.services import create_workflow, link_subject_set

    if retirement is None:
        retirement = {"scope": "first_question", "policy": policy}
    retirement = retirement | {"machine_agents": machine_agents} | ({"estimator": estimator} if estimator else {})
    workflow = create_workflow(project, name, tasks or BINARY_TASKS, retirement=retirement, active_learning=active_learning)
    for subject_set in subject_sets:
        link_subject_set(workflow, subject_set)
    # Gold subjects are the CNN's test set: served to humans only when nothing else is left for them.
    SubjectWorkflowState.objects.filter(workflow=workflow, is_gold=True).update(priority=-1.0)
    return workflow


def wait_applied(workflow_id: int, backlog: int = 0, timeout: float = 600) -> None:
    from classifications.models import Classification

    deadline = time.monotonic() + timeout
    while Classification.objects.filter(workflow_id=workflow_id, applied_seq__isnull=True).count() > backlog:
        if time.monotonic() > deadline:
            raise RuntimeError("the aggregation worker fell behind for too long")
        time.sleep(0.05)


def wait_machine(workflow, timeout: float = 1800) -> float:
    """Wait for a queued training (or pretraining) run, its promotion, predictions and their application; seconds."""
    from django.core.cache import cache

    from machine import heartbeat
    from machine.models import ModelVersion

    t0 = time.monotonic()
    deadline = t0 + timeout
    while cache.get(heartbeat.training_key(workflow.pk)) or ModelVersion.objects.filter(workflow=workflow, state="training").exists():
        if time.monotonic() > deadline:
            raise RuntimeError("training took too long")
        time.sleep(0.2)
    wait_applied(workflow.pk)
    return time.monotonic() - t0


def _is_retired(queued: object) -> bool:
    """What the queue served is retired (served only when nothing unretired is left for the volunteer)."""
    retired = getattr(queued, "retired", None)
    return bool(retired) if retired is not None else getattr(queued, "status", "active") == "retired"


def simulate(workflow, crowd: Crowd | TreeCrowd, volunteers: list, index_of: dict[int, int], args, machine: bool, pace: tuple[int, int, int]) -> dict:
    """Volunteers visit until every non-gold galaxy is retired. ``pace`` = (subjects per visit, votes
    between checks, unapplied votes allowed at a check): real volunteers take seconds per galaxy and the
    applier milliseconds, so (b) and (c) wait for every visit to be applied before the next (no vote is
    wasted on a galaxy that is already decided); (a) needs no posterior and runs ahead."""
    per_visit, check_every, max_lag = pace
    from django.db import OperationalError

    from classifications.selectors import next_subjects
    from classifications.services import submit_classifications
    from live.services import refit_workflow
    from machine import training
    from projects.models import SubjectWorkflowState

    rng = random.Random(args.seed)  # the same arrival order in every mode
    active = SubjectWorkflowState.objects.filter(workflow=workflow, status="active", is_gold=False)
    exhausted: set[int] = set()
    submitted = since_check = since_refit = deadlocks = 0
    machine_seconds = 0.0
    t0 = time.monotonic()
    while len(exhausted) < len(volunteers):
        v = rng.randrange(len(volunteers))
        if v in exhausted:
            continue
        states, _ = next_subjects(workflow, volunteers[v], per_visit)
        states = [s for s in states if not _is_retired(s)]
        if not states:
            exhausted.add(v)
            continue
        items = [{
            "workflow": workflow.pk, "subject": s.subject_id, "idempotency_key": f"w{workflow.pk}-v{v}-s{s.subject_id}",
            "annotations": crowd.annotations(v, index_of[s.subject_id]),
        } for s in states]
        for attempt in range(5):  # as a client retries a failed request (the key makes it idempotent)
            try:
                submit_classifications(volunteers[v], items)
                break
            except OperationalError:  # a deadlock between this batch's counts and the applier's posteriors
                deadlocks += 1
                if attempt == 4:
                    raise
        submitted += len(items)
        since_check += len(items)
        since_refit += len(items)
        if since_check >= check_every:
            since_check = 0
            wait_applied(workflow.pk, backlog=max_lag)
            if args.refit_every and since_refit >= args.refit_every:
                since_refit = 0
                wait_applied(workflow.pk)
                refit_workflow(workflow.pk)
            if machine and training.check_retraining():
                machine_seconds += wait_machine(workflow)
            if not active.exists():
                break
        if time.monotonic() - t0 > args.max_seconds:
            print(f"  {workflow.name}: stopped after {args.max_seconds} s", flush=True)
            break
    wait_applied(workflow.pk)
    return {"wall_seconds": time.monotonic() - t0, "submitted": submitted, "machine_wait_seconds": machine_seconds, "deadlocks": deadlocks}


def measure(workflow, crowd: Crowd, index_of: dict[int, int], run: dict, majority: bool) -> dict:
    """Votes per retired galaxy, accuracy of retired labels against GZ1, machine share."""
    from classifications.models import Classification
    from machine.models import ModelVersion
    from projects.models import SubjectWorkflowState

    states = list(SubjectWorkflowState.objects.filter(workflow=workflow, is_gold=False).values_list("subject_id", "status", "retirement_reason", "posterior"))
    human = Classification.objects.filter(workflow=workflow).exclude(volunteer__machine_agent__isnull=False)
    votes = Counter(human.filter(is_gold=False).values_list("subject_id", flat=True))
    gold_votes = human.filter(is_gold=True).count()
    label: dict[int, int] = {}
    if majority:  # GZ2: the majority of the first 40 counted votes (ties: smooth)
        tallies: dict[int, list[int]] = defaultdict(list)
        for subject_id, annotations in human.filter(counts=True, is_gold=False).order_by("id").values_list("subject_id", "annotations"):
            if len(tallies[subject_id]) < 40:
                tallies[subject_id].append(annotations[0]["value"])
        label = {s: int(sum(t) > len(t) / 2) for s, t in tallies.items()}
    else:
        label = {s: int(np.argmax(p["T0"])) for s, _, _, p in states if p and "T0" in p}
    retired = [(s, reason) for s, status, reason, _ in states if status == "retired"]
    right = {s: s in label and label[s] == crowd.labels[index_of[s]] for s, _ in retired}
    by_reason = Counter(reason for _, reason in retired)
    accuracy_by_reason = {r: round(float(np.mean([right[s] for s, x in retired if x == r])), 4) for r in by_reason}
    human_votes = sum(votes.values())
    if majority:  # GZ2's way uses exactly 40 per galaxy; what the crowd sent past 40 before retirement was applied is not counted
        human_votes = sum(len(t) for t in tallies.values())
    out = {
        "galaxies": len(states),
        "retired": len(retired),
        "human_votes": human_votes,
        "human_votes_submitted": sum(votes.values()),
        "human_votes_per_retired_galaxy": round(human_votes / max(len(retired), 1), 2),
        "accuracy_of_retired": round(float(np.mean(list(right.values()))), 4) if retired else None,
        "retired_by": dict(by_reason),
        "accuracy_by_reason": accuracy_by_reason,
        "machine_share": round(by_reason.get("machine", 0) / max(len(retired), 1), 4),
        "votes_on_gold_subjects": gold_votes,
        "wall_seconds": round(run["wall_seconds"], 1),
        "machine_wait_seconds": round(run["machine_wait_seconds"], 1),
        "submission_deadlocks_retried": run["deadlocks"],
        # per retired galaxy (its index in this seed's gz1_galaxies): reason and label, for paired comparisons and later analysis
        "outcomes": sorted([index_of[s], reason, label.get(s)] for s, reason in retired),
    }
    versions = ModelVersion.objects.filter(workflow=workflow).order_by("version")
    if versions.exists():
        out["model_versions"] = [
            {"version": v.version, "state": v.state, "n_train": v.metrics.get("n_train"), "gold_accuracy": v.metrics.get("accuracy"),
             "ece": None if v.metrics.get("ece") is None else round(v.metrics["ece"], 4), "trained": v.metrics.get("trained"),
             "train_seconds": v.metrics.get("train_seconds"), "confident_share": v.metrics.get("confident_share"),
             "confident_accuracy": v.metrics.get("confident_accuracy"), "n_retire_gold": v.metrics.get("n_retire_gold"),
             "retire_accuracy": v.metrics.get("retire_accuracy"), "n_retired_gold": v.metrics.get("n_retired_gold"),
             "retired_gold_accuracy": v.metrics.get("retired_gold_accuracy"), "retired_gold_by_answer": v.metrics.get("retired_gold_by_answer"),
             "retire_answers": v.metrics.get("retire_answers"), "log_loss_difference": v.metrics.get("log_loss_difference")}
            for v in versions
        ]
    from machine.models import MachineAgent

    pretraining = MachineAgent.objects.filter(workflow=workflow).values_list("pretraining", flat=True).first()
    if pretraining:
        out["pretraining"] = pretraining
    return out


def machine_settings_of(args: argparse.Namespace) -> dict:
    """(c)'s ``Workflow.active_learning`` from the command line."""
    return {
        "enabled": True, "acquisition": args.acquisition, "exploration_share": args.exploration_share, "machine_retirement": True,
        "machine_threshold": args.machine_threshold, "retrain_every": args.retrain_every, "min_train": args.min_train,
        "min_gold_accuracy": args.min_gold_accuracy, "min_gold_subjects": args.min_gold_subjects, "min_retire_accuracy": args.min_retire_accuracy,
        "calibration_folds": args.calibration_folds, "promotion_tolerance": args.promotion_tolerance,
        "retirement_versions": args.retirement_versions, "stable_versions": 2, "stability_tolerance": 0.03,
        **({"retire_record": args.retire_record} if args.retire_record else {}),
        "image_size": args.image_size, "pretrain_epochs": args.pretrain_epochs, "epochs": args.epochs, "warm_epochs": args.warm_epochs,
        "min_steps": args.min_steps, "mc_samples": 20, "seed": args.seed, "label_min_reach": args.label_min_reach,
        **({"questions": {"T1": {"machine_threshold": args.t1_machine_threshold}}} if args.t1_machine_threshold is not None else {}),
    }


TREE = {"first_task": "T0", "tasks": engine_tree.TASKS}


def tree_galaxies(n: int, seed: int) -> tuple[list[str], np.ndarray, np.ndarray]:
    """A random ``n`` (0: all) of GZ1's galaxies with an unambiguous truth on the tree, as
    ``bench/engine_tree.py`` takes them: ids, T0 truth, T1 truth (-1: not a disk)."""
    ids, t0, t1, _ = engine_tree.load_galaxies()
    pick = list(range(len(ids)))
    random.Random(seed).shuffle(pick)
    pick = sorted(pick[:n] if n else pick)
    return [ids[i] for i in pick], t0[pick], t1[pick]


def measure_tree(workflow, crowd: TreeCrowd, index_of: dict[int, int], run: dict, a: dict, scored: list[int]) -> dict:
    """Per question: human answers per retired galaxy and accuracy of the retired labels (the argmax of
    the engine's posterior; T1 on the true disks), paired with (a)'s expectation galaxy by galaxy."""
    from classifications.models import Classification
    from projects.models import SubjectWorkflowState

    states = list(SubjectWorkflowState.objects.filter(workflow=workflow, is_gold=False).values_list("subject_id", "status", "retirement_reason", "posterior"))
    human = Classification.objects.filter(workflow=workflow, is_gold=False).exclude(volunteer__machine_agent__isnull=False)
    votes = {"T0": human.count(), "T1": human.filter(annotations__contains=[{"task": "T1"}]).count()}
    retired = [(index_of[s], reason, posterior) for s, status, reason, posterior in states if status == "retired"]
    n = max(len(retired), 1)
    position = {g: i for i, g in enumerate(scored)}
    out: dict = {"galaxies": len(states), "retired": len(retired), "retired_by": dict(Counter(r for _, r, _ in retired)),
                 "wall_seconds": round(run["wall_seconds"], 1), "machine_wait_seconds": round(run["machine_wait_seconds"], 1),
                 "submission_deadlocks_retried": run["deadlocks"], "questions": {}}
    truth = {"T0": crowd.t0, "T1": crowd.t1}
    expected = {"T0": a["exp0"], "T1": a["exp1"]}
    for key in ("T0", "T1"):
        rows = [(g, reason, int(np.argmax(p[key]))) for g, reason, p in retired if truth[key][g] >= 0]
        right = np.array([label == truth[key][g] for g, _, label in rows], dtype=bool)
        a_right = np.array([expected[key][position[g]] for g, _, _ in rows])
        by_reason = defaultdict(list)
        for (_, reason, _), r in zip(rows, right, strict=True):
            by_reason[reason.split(":")[0] if reason else "?"].append(bool(r))
        paired = paired_accuracy_difference(a_right, right.astype(float)).to_dict() if len(rows) > 1 else None
        out["questions"][key] = {
            "n": len(rows), "accuracy": round(float(right.mean()), 4) if len(rows) else None,
            "a_accuracy_same_galaxies": round(float(a_right.mean()), 4) if len(rows) else None,
            "human_votes": votes[key], "votes_per_retired_galaxy": round(votes[key] / n, 3),
            "accuracy_by_reason": {r: round(float(np.mean(v)), 4) for r, v in by_reason.items()},
            "paired_vs_a_expected": None if paired is None else {k: (round(v, 5) if isinstance(v, float) else [round(x, 5) for x in v] if isinstance(v, list) else v)
                                                                 for k, v in paired.items()},
        }
    out["outcomes"] = sorted([g, reason, int(np.argmax(p["T0"])), int(np.argmax(p["T1"]))] for g, reason, p in retired)
    from machine.models import ModelVersion

    out["model_versions"] = [
        {"version": v.version, "state": v.state, "n_train": v.metrics.get("n_train"), "trained": v.metrics.get("trained"),
         "questions": {key: {name: m.get(name) for name in ("accuracy", "n_gold_test", "trained", "trained_reason", "n_retired_gold",
                                                             "retired_gold_accuracy", "n_gold_calibration")}
                       for key, m in (v.metrics.get("questions") or {}).items()}}
        for v in ModelVersion.objects.filter(workflow=workflow).order_by("version")
    ]
    return out


def run_tree(args: argparse.Namespace, data_dir: Path) -> None:
    """The two-question tree (``--tree``): see the module docstring."""
    from classifications.models import Volunteer
    from live.services import rebuild_hot_state

    t_setup = time.monotonic()
    objids, t0, t1 = tree_galaxies(args.galaxies, args.seed)
    crowd = TreeCrowd(t0, t1, args.volunteers, args.seed)
    galaxies = [(objid, int(label)) for objid, label in zip(objids, t0, strict=True)]
    project, subject_sets, subject_ids, gold_index = setup_subjects(
        galaxies, args.gold_share, 0, args.seed, gold_of=lambda i: {"T0": int(t0[i])} | ({"T1": int(t1[i])} if t1[i] >= 0 else {}))
    index_of = {sid: i for i, sid in enumerate(subject_ids)}
    volunteers = [Volunteer.objects.create() for _ in range(args.volunteers)]
    scored = [i for i in range(len(galaxies)) if i not in gold_index]
    print(f"setup {time.monotonic() - t_setup:.1f} s: {len(galaxies)} galaxies ({int((t1 >= 0).sum())} disks, {len(gold_index)} gold, "
          f"{int((t1[list(gold_index)] >= 0).sum())} gold disks), crowd {crowd.describe()}", flush=True)
    # (a) without the platform: 40 volunteers per galaxy, each question's plurality, its expectation over
    # --a-draws random draws of 40 (engine_tree.mode_a; no closed form for a plurality of 3 or 4 answers).
    rng = np.random.default_rng(args.seed + 3)
    order = np.stack([rng.permutation(args.volunteers)[:engine_tree.BUDGET] for _ in range(len(galaxies))])
    a = engine_tree.mode_a(crowd, order, np.array(scored), args.a_draws, args.seed)
    disks = t1[scored] >= 0
    a_summary = {"T0": {"accuracy": round(float(a["exp0"].mean()), 4), "votes_per_galaxy": float(engine_tree.BUDGET), "n": len(scored)},
                 "T1": {"accuracy": round(float(a["exp1"][disks].mean()), 4), "votes_per_galaxy": round(float(a["t1_votes"].mean()), 3),
                        "n": int(disks.sum())}}
    results: dict = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "args": vars(args), "crowd": crowd.describe(),
                     "a": {"name": "(a) 40 votes, plurality per question, without the platform (expectation over draws)"} | a_summary}
    print(json.dumps(results["a"]), flush=True)
    log_dir = data_dir / "bench-logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    workers = [start_worker("aggregation", "aggregation", log_dir / "aggregation.log")]
    if "c" in args.modes:
        workers.append(start_worker("ml", "ml", log_dir / "ml.log"))
    retirement = {"scope": "workflow"} | ({"bar": args.bar} if args.bar is not None else {})
    modes = {"b": ("(b) engine alone, whole-workflow retirement", {}), "c": ("(c) engine + CNN + active learning, whole-workflow retirement",
                                                                            machine_settings_of(args))}
    try:
        for key in [m for m in args.modes if m in modes]:
            name, active_learning = modes[key]
            workflow = make_workflow(project, subject_sets, name, None, active_learning, args.machine_agents,
                                     {"difficulty": True} if args.engine_difficulty else None, tasks=TREE, retirement=retirement)
            print(f"{name} ...", flush=True)
            run = simulate(workflow, crowd, volunteers, index_of, args, machine=bool(active_learning), pace=(args.per_visit, args.per_visit, 0))
            results[key] = {"name": name, "retirement": retirement} | measure_tree(workflow, crowd, index_of, run, a, scored)
            replay = rebuild_hot_state(workflow.pk)
            results[key]["log_replay"] = {"max_posterior_difference": replay.max_posterior_difference,
                                          "retirement_mismatches": len(replay.retirement_mismatches)}
            print(json.dumps({k: v for k, v in results[key].items() if k not in ("outcomes", "model_versions")}), flush=True)
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            try:
                worker.wait(timeout=20)
            except subprocess.TimeoutExpired:
                worker.kill()
    write_tree_results(args, results, a_summary)


def write_tree_results(args: argparse.Namespace, results: dict, a_summary: dict) -> None:
    """This seed's summary (``{"seed", "votes_ratio", "questions": {"T0": {"a", "c", ...}, "T1": ...}}``)
    merged into ``--out`` with the other seeds' (each seed run on its own), and its full results."""
    out = Path(args.out or ROOT / "bench" / "results" / "machine_loop_tree.json")
    summary: dict = {"seed": args.seed, "command": results["command"]}
    if "c" in results:
        c = results["c"]["questions"]
        a_votes = sum(a_summary[k]["votes_per_galaxy"] for k in ("T0", "T1"))
        c_votes = sum(c[k]["votes_per_retired_galaxy"] for k in ("T0", "T1"))
        summary["votes_ratio"] = round(a_votes / max(c_votes, 1e-9), 3)
        summary["questions"] = {key: {
            "a": c[key]["a_accuracy_same_galaxies"], "c": c[key]["accuracy"], "n": c[key]["n"],
            "a_all_galaxies": a_summary[key]["accuracy"], "votes_a": a_summary[key]["votes_per_galaxy"], "votes_c": c[key]["votes_per_retired_galaxy"],
            "difference": (c[key]["paired_vs_a_expected"] or {}).get("difference"), "interval": (c[key]["paired_vs_a_expected"] or {}).get("interval"),
        } for key in ("T0", "T1")}
        summary["retired"], summary["galaxies"] = results["c"]["retired"], results["c"]["galaxies"]
        goal = summary["votes_ratio"] >= 8 and all((q["interval"] or [0, -1])[1] >= 0 for q in summary["questions"].values())
        summary["goal_met"] = goal  # >= 8x fewer human answers than (a), and on every question not below (a) (interval reaches 0)
        print(json.dumps(summary), flush=True)
    existing = json.loads(out.read_text()) if out.exists() else {}
    seeds = {entry["seed"]: entry for entry in existing.get("seeds", [])} | {args.seed: summary}
    runs = existing.get("runs", {}) | {str(args.seed): results}
    document = {"what": "bench/machine_loop.py --tree: GZ1's two-question tree, whole-workflow retirement, per seed (one run each)",
                "seeds": [seeds[k] for k in sorted(seeds)], "runs": {k: runs[k] for k in sorted(runs, key=int)}}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(document, indent=2) + "\n")
    print(f"written {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--galaxies", type=int, default=700)
    parser.add_argument("--volunteers", type=int, default=250)
    parser.add_argument("--gold-share", type=float, default=0.15)
    parser.add_argument("--a-sample", type=int, default=0,
                        help="(a) on the platform for this many random non-gold galaxies only (0: all); "
                             "(a) is also computed without the platform on all of them")
    parser.add_argument("--per-visit", type=int, default=10, help="subjects a volunteer asks for per visit in (b) and (c)")
    parser.add_argument("--refit-every", type=int, default=2000)
    parser.add_argument("--retrain-every", type=int, default=60)
    parser.add_argument("--min-train", type=int, default=100)
    parser.add_argument("--image-size", type=int, default=48)
    parser.add_argument("--pretrain-epochs", type=int, default=20,
                        help="self-supervised pretraining of the CNN's trunk on the galaxies' images before its first version (0: none; runs 1-30 had none)")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--warm-epochs", type=int, default=6)
    parser.add_argument("--min-steps", type=int, default=200, help="at least this many optimiser steps per training run")
    parser.add_argument("--machine-threshold", type=float, default=0.95)
    parser.add_argument("--exploration-share", type=float, default=0.1)
    parser.add_argument("--min-gold-accuracy", type=float, default=0.8)
    parser.add_argument("--min-retire-accuracy", type=float, default=0.97,
                        help="'trained' also needs this accuracy on the gold subjects its versions would have retired, replayed")
    parser.add_argument("--calibration-folds", type=int, default=2,
                        help="gold galaxies calibrate each CNN version and measure it out of fold, in this many folds (0: no calibration)")
    parser.add_argument("--promotion-tolerance", type=float, default=2.0,
                        help="promote a new version unless its log loss is worse by more than this many standard errors")
    parser.add_argument("--retirement-versions", type=int, default=2,
                        help="the machine retires where the mean of this many successive versions' probabilities reaches the threshold")
    parser.add_argument("--machine-agents", default=DEFAULT_MACHINE_AGENTS, choices=MACHINE_AGENTS,
                        help="how the machine's answers enter the engine (live.engine.MACHINE_AGENTS)")
    parser.add_argument("--engine-posterior", type=float, default=ENGINE_POSTERIOR,
                        help="(b) and (c) retire a subject by consensus at this posterior (after 3 votes, at most 40)")
    parser.add_argument("--engine-difficulty", action="store_true",
                        help="(b) and (c): the engine models a difficulty per galaxy (estimator option difficulty, aggregation.difficulty)")
    parser.add_argument("--retire-record", default=None, choices=("per_answer", "overall"),
                        help="what min_retire_accuracy judges: each answer's gold record (run 36 of machine_loop_6493.md) or all "
                             "together (the platform's default)")
    parser.add_argument("--acquisition", default="bald")
    parser.add_argument("--modes", default="abc")
    parser.add_argument("--max-seconds", type=float, default=900)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--min-gold-subjects", type=int, default=20, help="'trained' is judged on at least this many gold subjects (per question)")
    parser.add_argument("--tree", action="store_true",
                        help="GZ1's two-question tree (T0 four answers, T1 edge-on / clockwise / anticlockwise), whole-workflow retirement; "
                             "modes b and c on the platform, (a) without it; writes bench/results/machine_loop_tree.json")
    parser.add_argument("--a-draws", type=int, default=200, help="--tree: random draws of 40 per galaxy for (a)'s expectation")
    parser.add_argument("--bar", type=float, default=None, help="--tree: every required task's bar (default: the library's, aggregation.defaults)")
    parser.add_argument("--t1-machine-threshold", type=float, default=None, help="--tree: T1's own machine threshold (default: --machine-threshold)")
    parser.add_argument("--label-min-reach", type=float, default=0.5,
                        help="a question teaches the CNN only on subjects whose reach of it is at least this (machine.config)")
    parser.add_argument("--out", default=None,
                        help="default bench/results/machine_loop.json, with --tree bench/results/machine_loop_tree.json (seeds merged)")
    args = parser.parse_args()

    data_dir = Path(os.environ["CHORUS_DATA_DIR"])
    import django

    django.setup()
    reset_platform(data_dir)
    if args.tree:
        run_tree(args, data_dir)
        return
    args.out = args.out or str(ROOT / "bench" / "results" / "machine_loop.json")

    from classifications.models import Volunteer
    from live.services import rebuild_hot_state

    t_setup = time.monotonic()
    galaxies = gz1_galaxies(args.galaxies, args.seed)
    labels = np.array([y for _, y in galaxies])
    crowd = Crowd(labels, args.volunteers, args.seed)
    project, subject_sets, subject_ids, gold_index = setup_subjects(galaxies, args.gold_share, args.a_sample, args.seed)
    index_of = {sid: i for i, sid in enumerate(subject_ids)}
    gold = {subject_ids[i] for i in gold_index}
    volunteers = [Volunteer.objects.create() for _ in range(args.volunteers)]
    print(f"setup {time.monotonic() - t_setup:.1f} s: {len(galaxies)} galaxies ({labels.mean():.1%} featured, {len(gold)} gold), "
          f"crowd {crowd.describe()}", flush=True)

    log_dir = data_dir / "bench-logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    workers = [start_worker("aggregation", "aggregation", log_dir / "aggregation.log")]
    if "c" in args.modes:
        workers.append(start_worker("ml", "ml", log_dir / "ml.log"))
    machine_settings = machine_settings_of(args)
    modes = {
        "a": ("(a) 40 votes, majority", "max:40", {}, True, (20, 400, 400)),
        "b": ("(b) engine alone", engine_policy(args.engine_posterior), {}, False, (args.per_visit, args.per_visit, 0)),
        "c": ("(c) engine + CNN + active learning", engine_policy(args.engine_posterior), machine_settings, False, (args.per_visit, args.per_visit, 0)),
    }
    results: dict = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "args": vars(args), "crowd": crowd.describe()}
    non_gold = [i for i in range(len(galaxies)) if i not in gold_index]
    # (a) without the platform, whatever the modes: cheap, and every mode is compared with it galaxy by galaxy
    a_drawn, a_expected = majority_outcomes(crowd, non_gold, 40, args.seed)
    results["a_offline_all"] = {"name": "(a) 40 votes, majority, without the platform, every non-gold galaxy"} | \
        majority_summary(a_drawn, a_expected, 40)
    print(json.dumps(results["a_offline_all"]), flush=True)
    try:
        for key in args.modes:
            name, policy, active_learning, majority, pace = modes[key]
            workflow = make_workflow(project, subject_sets[:1] if key == "a" else subject_sets, name, policy, active_learning,
                                     args.machine_agents, {"difficulty": True} if args.engine_difficulty and key != "a" else None)
            print(f"{name} ...", flush=True)
            run = simulate(workflow, crowd, volunteers, index_of, args, machine=bool(active_learning), pace=pace)
            results[key] = {"name": name, "policy": policy} | measure(workflow, crowd, index_of, run, majority)
            right = {g: lab == crowd.labels[g] for g, _, lab in results[key]["outcomes"]}
            results[key]["paired"] = paired_against_a(right, a_drawn, a_expected, non_gold)
            replay = rebuild_hot_state(workflow.pk)  # exactly once under load: the log replays to the live state
            results[key]["log_replay"] = {"max_posterior_difference": replay.max_posterior_difference,
                                          "retirement_mismatches": len(replay.retirement_mismatches)}
            print(json.dumps({k: v for k, v in results[key].items() if k != "outcomes"}), flush=True)
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            try:
                worker.wait(timeout=20)
            except subprocess.TimeoutExpired:
                worker.kill()
    if "a" in results and "c" in results:
        results["c_votes_ratio_vs_a"] = round(results["a"]["human_votes_per_retired_galaxy"] / max(results["c"]["human_votes_per_retired_galaxy"], 1e-9), 2)
    if "b" in results and "c" in results:
        results["c_votes_ratio_vs_b"] = round(results["b"]["human_votes_per_retired_galaxy"] / max(results["c"]["human_votes_per_retired_galaxy"], 1e-9), 2)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
