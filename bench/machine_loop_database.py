"""What a finished ``bench/machine_loop.py`` run's database shows about its mode (c).

    .venv/bin/python bench/machine_loop_database.py --run bench/results/machine_loop_6493_hysteresis_seed2.json

Reads the bench's own database (``CHORUS_DATA_DIR``, by default ``/tmp/chorus-bench-machine``,
which holds the last run) and the run's JSON (for the crowd's seed and size), changes nothing,
and prints where (c)'s human votes went, how accurate the machine's retirements were by pass, by
answer and by stated confidence, what each model version would have newly retired on gold, what one human
answer confirming each machine retirement would have cost and bought, and (runs that kept ``outcomes``) how
right (c)'s machine and consensus and (a), exactly, were by the galaxy's difficulty for the crowd. Why a script: these are the
figures that decide which change to the loop is worth a 35-minute run (``machine_loop_6493.md``).

The confirmation estimate uses the simulated crowd's own probabilities: a random volunteer agrees
with the machine's label with the galaxy's mean probability of a right answer if the label is
right, and the complement if not; a galaxy whose confirmation fails goes to the consensus at that
run's consensus cost and accuracy.
"""

from __future__ import annotations

import argparse
import json
import random
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
from machine_loop import (  # sets up the paths and the bench's data folder
    Crowd,
    gold_indices,
    gz1_galaxies,
    majority_outcomes,
)

from live.engine import MACHINE_RETIRE_KEY  # noqa: E402  (no Django in it)

CONFIDENCE_BINS = (0.9, 0.95, 0.97, 0.98, 0.99, 1.01)


def human_votes(workflow) -> dict:
    """Human votes by the retirement reason of their galaxy, and before the first machine retirement."""
    from classifications.models import Classification
    from projects.models import SubjectWorkflowState

    states = SubjectWorkflowState.objects.filter(workflow=workflow, is_gold=False)
    human = Classification.objects.filter(workflow=workflow, is_gold=False, volunteer__machine_agent__isnull=True)
    votes = Counter(human.values_list("subject_id", flat=True))
    by_reason: dict[str, list[int]] = defaultdict(list)
    for subject_id, reason, status in states.values_list("subject_id", "retirement_reason", "status"):
        by_reason[reason or status].append(votes.get(subject_id, 0))
    out = {reason: {"galaxies": len(v), "votes": sum(v), "per_galaxy": round(sum(v) / len(v), 2)} for reason, v in by_reason.items()}
    first = states.filter(retirement_reason="machine").order_by("retired_at").values_list("retired_at", flat=True).first()
    if first is not None:
        out["before_first_machine_retirement"] = {
            "votes": human.filter(created_at__lt=first).count(),
            "human_retirements": states.filter(retired_at__lt=first).count(),
        }
    return out


def machine_passes(workflow, labels: dict[int, int], n_versions: int) -> dict:
    """The machine's retirements, first pass (no version that retired anything had predicted the
    galaxy before) against later passes, each by the stated confidence the rule retired on (the mean
    of the last ``n_versions`` predictions).

    Why "a version that retired anything" and not "a trained version": a version is trained before it
    may retire (it also needs ``n_versions`` - 1 ancestors), so a trained version can predict every
    galaxy without retiring any, and then every retirement would count as a later pass (run 33)."""
    from classifications.models import Classification
    from projects.models import SubjectWorkflowState

    machine = Classification.objects.filter(workflow=workflow, is_gold=False, volunteer__machine_agent__isnull=False)
    retiring = set(machine.filter(**{f"metadata__{MACHINE_RETIRE_KEY}": True}).values_list("metadata__model_version", flat=True))
    retired = set(SubjectWorkflowState.objects.filter(workflow=workflow, retirement_reason="machine").values_list("subject_id", flat=True))
    predictions: dict[int, list[tuple[int, list[float], bool]]] = defaultdict(list)
    rows = machine.filter(subject_id__in=retired)
    for subject_id, metadata in rows.order_by("id").values_list("subject_id", "metadata"):
        predictions[subject_id].append((metadata["model_version"], metadata["probabilities"], bool(metadata.get(MACHINE_RETIRE_KEY))))
    passes: dict[str, dict[float, list[bool]]] = {"first": defaultdict(list), "later": defaultdict(list)}
    by_answer: dict[str, dict[int, list[bool]]] = {"first": defaultdict(list), "later": defaultdict(list)}
    for subject_id, made in predictions.items():
        k = next(i for i, (_, _, retire) in enumerate(made) if retire)
        mean = np.mean([p for _, p, _ in made[max(0, k - n_versions + 1):k + 1]], axis=0)
        tried = any(version in retiring for version, _, _ in made[:k])
        lower = max(b for b in (0.0, *CONFIDENCE_BINS) if b <= mean.max())
        answer = int(np.argmax(made[k][1]))
        passes["later" if tried else "first"][lower].append(answer == labels[subject_id])
        by_answer["later" if tried else "first"][answer].append(answer == labels[subject_id])

    def summary(groups: dict) -> dict:
        return {f"{g}": {"galaxies": len(v), "accuracy": round(float(np.mean(v)), 4)} for g, v in sorted(groups.items())}

    return {name: {"galaxies": sum(len(v) for v in bins.values()),
                   "accuracy": round(float(np.mean([x for v in bins.values() for x in v])), 4) if bins else None,
                   "by_answer": summary(by_answer[name]),
                   "by_confidence": {f">= {b}": row for b, row in summary(bins).items()}}
            for name, bins in passes.items()}


def versions_on_gold(workflow) -> list[dict]:
    """Per model version: its state, the gold its line had retired (replayed) and how right, what its
    own rule would retire on gold, and what of that its line had not retired yet: what it would add."""
    from machine.config import machine_settings
    from machine.gold_gate import replay_line, replay_on_gold
    from machine.models import ModelVersion
    from machine.selectors import gold_line
    from machine.training_data import gold_set

    cfg = machine_settings(workflow)
    ids, y = gold_set(workflow)
    out = []
    for version in ModelVersion.objects.filter(workflow=workflow).order_by("version"):
        if not version.gold_predictions:
            continue
        line = gold_line(version)
        probs = np.array([version.gold_predictions[str(i)] for i in ids])
        before = replay_line(ids, line, cfg)
        now, _ = replay_on_gold(ids, probs, line, cfg)
        new = now & (before < 0)

        def accuracy(mask: np.ndarray, answers: np.ndarray) -> float | None:
            return round(float(np.mean(answers[mask] == y[mask])), 3) if mask.any() else None

        out.append({
            "version": version.version, "state": version.state, "trained": bool(version.metrics.get("trained")),
            "n_train": version.metrics.get("n_train"),
            "line_retired": int((before >= 0).sum()), "line_accuracy": accuracy(before >= 0, before),
            "own_rule": int(now.sum()), "own_rule_accuracy": accuracy(now, probs.argmax(axis=1)),
            "new": int(new.sum()), "new_accuracy": accuracy(new, probs.argmax(axis=1)),
        })
    return out


def confirmation_estimate(workflow, crowd: Crowd, index_of: dict[int, int], consensus: dict) -> dict:
    """One human answer on every machine-retired galaxy: the expected share that agrees, the
    accuracy of those, and the votes and errors the loop would have had (see the docstring)."""
    from projects.models import SubjectWorkflowState

    rows = SubjectWorkflowState.objects.filter(workflow=workflow, retirement_reason="machine").values_list("subject_id", "posterior")
    galaxy = np.array([index_of[s] for s, _ in rows])
    right = np.array([int(np.argmax(p["T0"])) for _, p in rows]) == crowd.labels[galaxy]
    p_right = crowd.p_right.mean(axis=0)[galaxy]
    agree = np.where(right, p_right, 1 - p_right)
    wrong_agreeing = float(agree[~right].sum())
    disagree = len(galaxy) - float(agree.sum())
    return {
        "machine_retired": len(galaxy), "machine_accuracy": round(float(right.mean()), 4),
        "volunteer_right_on_machine_right": round(float(p_right[right].mean()), 3),
        "volunteer_right_on_machine_wrong": round(float(p_right[~right].mean()), 3) if (~right).any() else None,
        "agreeing": round(float(agree.sum())), "agreeing_accuracy": round(1 - wrong_agreeing / float(agree.sum()), 4),
        "extra_votes": round(len(galaxy) + disagree * consensus["per_galaxy"]),
        "errors_before": int((~right).sum()),
        "errors_after": round(wrong_agreeing + disagree * (1 - consensus["accuracy"]), 1),
    }


SHARE_BINS = (0.5, 0.6, 0.7, 0.8, 0.9, 1.01)


def by_crowd_difficulty(outcomes: list, crowd: Crowd, non_gold: list[int], seed: int) -> dict:
    """(c)'s retired labels and (a)'s exact accuracy (``majority_outcomes``) on the same galaxies, by
    how hard each galaxy is for the crowd (its real counterpart's vote share q): where (c) loses to
    or beats 40 votes, and whether by the machine or by the consensus."""
    _, expected = majority_outcomes(crowd, non_gold, 40, seed)
    a_exact = dict(zip(non_gold, expected, strict=True))
    rows: dict[float, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for galaxy, reason, label in outcomes:
        low = max(b for b in SHARE_BINS if b <= crowd.q[galaxy])
        rows[low]["a"].append(a_exact[galaxy])
        rows[low][reason].append(label == crowd.labels[galaxy])
    return {f"q {low:.1f}-{min(high, 1.0):.1f}": {"galaxies": len(rows[low]["a"]), "a_exact_accuracy": round(float(np.mean(rows[low]["a"])), 4)}
            | {reason: {"galaxies": len(v), "accuracy": round(float(np.mean(v)), 4)} for reason, v in rows[low].items() if reason != "a"}
            for low, high in zip(SHARE_BINS, SHARE_BINS[1:], strict=False) if rows[low]["a"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", required=True, help="the run's JSON (bench/machine_loop.py --out)")
    parser.add_argument("--out", help="also write the figures here as JSON")
    args = parser.parse_args()
    run = json.loads(Path(args.run).read_text())
    import django

    django.setup()
    from projects.models import Subject, Workflow

    workflow = Workflow.objects.get(name__startswith="(c)")
    galaxies = gz1_galaxies(run["args"]["galaxies"], run["args"]["seed"])
    crowd = Crowd(np.array([y for _, y in galaxies]), run["args"]["volunteers"], run["args"]["seed"])
    galaxy_of = {objid: i for i, (objid, _) in enumerate(galaxies)}
    index_of = {pk: galaxy_of[objid] for pk, objid in Subject.objects.filter(
        subject_set__project=workflow.project).values_list("pk", "external_id")}
    labels = {pk: int(crowd.labels[i]) for pk, i in index_of.items()}
    votes = human_votes(workflow)
    if votes.get("consensus", {}).get("galaxies") != run["c"]["retired_by"].get("consensus"):
        raise SystemExit(f"the database at CHORUS_DATA_DIR is not the run in {args.run}")
    consensus = votes["consensus"] | {"accuracy": run["c"]["accuracy_by_reason"]["consensus"]}
    figures = {
        "human_votes": votes,
        "machine_passes": machine_passes(workflow, labels, run["args"]["retirement_versions"]),
        "versions_on_gold": versions_on_gold(workflow),
        "confirmation_estimate": confirmation_estimate(workflow, crowd, index_of, consensus),
    }
    if "outcomes" in run["c"]:  # runs from commit 112a98b on
        gold = gold_indices(len(galaxies), run["args"]["gold_share"], random.Random(run["args"]["seed"]))
        non_gold = [i for i in range(len(galaxies)) if i not in gold]
        figures["by_crowd_difficulty"] = by_crowd_difficulty(run["c"]["outcomes"], crowd, non_gold, run["args"]["seed"])
    for key in ("human_votes", "machine_passes", "confirmation_estimate", "by_crowd_difficulty"):
        if key not in figures:
            continue
        print(key, json.dumps(figures[key], indent=1))
    print("versions on gold (version state trained n_train | line retired, accuracy | own rule | new):")
    for v in figures["versions_on_gold"]:
        print(f"  v{v['version']} {v['state']} {v['trained']} {v['n_train']} | {v['line_retired']} {v['line_accuracy']} "
              f"| {v['own_rule']} {v['own_rule_accuracy']} | {v['new']} {v['new_accuracy']}")
    if args.out:
        Path(args.out).write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
