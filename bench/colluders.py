"""Colluding fresh identities against the engine: the fewest that retire a subject wrongly, before
and after Sybil resistance (issue 25), and what that resistance costs honest volunteers.

    .venv/bin/python bench/colluders.py --json bench/results/colluders.json     # all 6,608 GZ1 galaxies
    .venv/bin/python bench/colluders.py --galaxies 1000 --targets 30 --ns 1,2,3,6,12,40 --defaults new

No platform, no Django: ``aggregation.WorkflowAggregator`` in process, on ``bench/engine_tree.py``'s
simulated crowd (GZ1's two-question tree, 250 volunteers with the skills of real crowd workers, each
galaxy's difficulty from a real Galaxy Zoo vote split, 5% gold galaxies; see that script) and its
whole-workflow retirement (c). Two settings (``--defaults both``, the default; ``old`` or ``new`` runs
one):

- ``old``: the engine before issue 25 (``{"half_trust": 0}``: every volunteer taken at the crowd's
  average skill from its first answer, the retirement guard and budget counting every classification);
- ``new``: the library's defaults (``aggregation.defaults.HALF_TRUST``: a volunteer is trusted as far
  as the engine has evidence of its skill; the guard and the budget count only volunteers of
  established skill).

For each setting:

1. **Cost** (``runs``): the crowd classifies every galaxy through one aggregator in a live queue
   (``engine_tree.stream``, refit every 2,000 classifications): votes per galaxy and accuracy per
   question, as engine_tree's (c); the paired difference new − old galaxy by galaxy.
2. **Attack** (``attack``), on the engine as the crowd left it (its 250 volunteers established):
   ``--targets`` scored galaxies; for each N in ``--ns`` (default 0..40, the budget), each target, under
   a new subject id, first gets N classifications from N fresh identities that all give the same wrong
   T0 answer, then its own crowd volunteers (those of engine_tree's arrival order) one by one until it
   retires or its 40 are spent. Two colluder answers: ``artifact`` ("star or artifact", never the truth
   in GZ1: the fault run's attack) and ``plausible`` (the wrong answer the galaxy's real vote split
   gives most, which honest mistakes then back). Counted: targets retired on the colluders' answer
   (``retired_wrongly``), of them before any honest vote, targets *turned* by the colluders (retired
   on their answer with N of them and not with none: the crowd's own mistakes give the plausible
   answer now and then), targets with a wrong T0 label at retirement, crowd classifications used,
   unretired. Each N starts from a copy of the same engine; no refit meanwhile. The smallest N that
   turns at least one target, and half of them, per setting.
3. **Honest newcomers** (``newcomers``): 40 fresh identities that answer as the crowd's volunteers do
   (crowd volunteer i's drawn answers under a new id) first each classify G gold galaxies (their own
   answers, right or wrong as their skill makes them, with the gold truth), then classify the targets
   alone, in a random order per target, no established volunteer among them: share retired, T0 accuracy,
   classifications per target, for G in ``--gold-counts`` (0, 1, 3, 5, 10). The established crowd on
   the same targets is the attack's N = 0.

Prints a table and, last, one JSON line ``{"smallest_n_wrong": {...}, "cost": {...}}``; ``--json PATH``
writes everything there.
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import engine_tree as tree  # noqa: E402  (bench/: its crowd, galaxies and live queue)

from aggregation import WorkflowAggregator, defaults  # noqa: E402
from aggregation.evaluation import paired_accuracy_difference  # noqa: E402

SETTINGS = {"old": {"half_trust": 0}, "new": None}  # retirement settings (None: the library's defaults)
COLLUDER_ANSWERS = ("artifact", "plausible")
SHOWN_NS = (0, 1, 2, 3, 4, 5, 6, 8, 10, 15, 20, 30, 40)


def score_run(run: dict[str, Any], crowd: tree.Crowd, scored: np.ndarray) -> dict[str, Any]:
    """Per question: accuracy at retirement and votes per galaxy (engine_tree's (c) figures), and the
    per-galaxy rightness for the paired comparison."""
    at = run["at_retirement"]
    disks = scored[crowd.t1[scored] >= 0]
    right0 = np.array([at.get(g, (-1, -1))[0] == crowd.t0[g] for g in scored])
    right1 = np.array([at.get(g, (-1, -1))[1] == crowd.t1[g] for g in disks])
    reasons: dict[str, int] = {}
    for g in scored:
        if g in at:
            reasons[at[g][2]] = reasons.get(at[g][2], 0) + 1
    return {
        "T0": {"accuracy": round(float(right0.mean()), 4), "votes": round(float(run["given"][scored].mean()), 3)},
        "T1": {"accuracy": round(float(right1.mean()), 4), "votes": round(float(run["t1_given"][scored].mean()), 3),
               "votes_per_disk_galaxy": round(float(run["t1_given"][disks].mean()), 3)},
        "retired_by": reasons, "unretired": int(sum(g not in at for g in scored)),
        "anomalies": len(run["anomalies"]), "seconds": run["seconds"], "refits": run["refits"],
        "_right0": right0, "_right1": right1,
    }


def crowd_annotations(crowd: tree.Crowd, volunteer: int, galaxy: int) -> list[dict]:
    a0 = int(crowd.a0[volunteer, galaxy])
    annotations = [{"task": "T0", "value": a0}]
    if a0 == tree.DISK:
        annotations.append({"task": "T1", "value": int(crowd.a1[volunteer, galaxy])})
    return annotations


def colluder_answer(crowd: tree.Crowd, galaxy: int, kind: str) -> int:
    if kind == "artifact":
        return tree.ARTIFACT
    split = crowd.split0[galaxy].copy()
    split[crowd.t0[galaxy]] = -1.0  # the most voted wrong answer of its real vote split
    return int(np.argmax(split))


def attack(engine: WorkflowAggregator, crowd: tree.Crowd, order: np.ndarray, targets: list[int], n: int,
           kind: str) -> dict[str, Any]:
    """N fresh colluders first, then each target's own crowd, on a copy of ``engine``."""
    agg = copy.deepcopy(engine)
    wrongly = alone = wrong_label = unretired = 0
    honest_votes: list[int] = []
    on_colluders: list[bool] = []  # per target: retired on the colluders' answer
    for g in targets:
        subject = f"attack-{kind}-{n}-{g}"
        bad = colluder_answer(crowd, g, kind)
        out = None
        for i in range(n):
            out = agg.add_classification(subject, f"sybil-{kind}-{n}-{g}-{i}", [{"task": "T0", "value": bad}])
            if out.retired:
                break
        by_colluders = out is not None and out.retired is not None
        used = 0
        if not by_colluders:
            for v in order[g]:
                used += 1
                out = agg.add_classification(subject, int(v), crowd_annotations(crowd, int(v), g))
                if out.retired:
                    break
        if agg.retirement_reason(subject) is None:
            unretired += 1
            on_colluders.append(False)
            continue
        label = int(np.argmax(agg.posterior(subject, "T0")))
        on_colluders.append(label == bad)
        wrongly += label == bad
        alone += by_colluders and label == bad
        wrong_label += label != crowd.t0[g]
        honest_votes.append(used)
    m = len(targets)
    return {"n": n, "retired_wrongly": round(wrongly / m, 4), "retired_wrongly_by_colluders_alone": round(alone / m, 4),
            "wrong_T0_label": round(wrong_label / m, 4), "unretired": round(unretired / m, 4),
            "crowd_votes": round(float(np.mean(honest_votes)), 3) if honest_votes else None,
            "_on_colluders": on_colluders}


def newcomers(engine: WorkflowAggregator, crowd: tree.Crowd, order: np.ndarray, targets: list[int], gold: list[int],
              n_gold: int, seed: int) -> dict[str, Any]:
    """40 fresh honest identities, each first right or wrong on ``n_gold`` gold galaxies as its skill
    makes it, then the targets alone."""
    agg = copy.deepcopy(engine)
    rng = random.Random(seed + 17 + n_gold)
    mirrors = list(range(tree.BUDGET))  # newcomer i answers as crowd volunteer i
    gold_right = gold_seen = 0
    for i in mirrors:
        for g in rng.sample(gold, n_gold):
            truth = {"T0": int(crowd.t0[g])} | ({"T1": int(crowd.t1[g])} if crowd.t1[g] >= 0 else {})
            annotations = crowd_annotations(crowd, i, g)
            agg.add_classification(g, f"new-{n_gold}-{i}", annotations, gold=truth)
            gold_seen += 1
            gold_right += annotations[0]["value"] == crowd.t0[g]
    t0_node = agg.estimators["T0"]
    trust = [t0_node.trust(f"new-{n_gold}-{i}") for i in mirrors]
    retired = right = 0
    votes: list[int] = []
    for g in targets:
        subject = f"newcomers-{n_gold}-{g}"
        used = 0
        for i in rng.sample(mirrors, len(mirrors)):  # the 40 newcomers in an order of the target's own
            used += 1
            out = agg.add_classification(subject, f"new-{n_gold}-{i}", crowd_annotations(crowd, i, g))
            if out.retired:
                break
        if agg.retirement_reason(subject) is not None:
            retired += 1
            right += int(np.argmax(agg.posterior(subject, "T0"))) == crowd.t0[g]
            votes.append(used)
    m = len(targets)
    return {"gold_each": n_gold, "gold_answers_right": round(gold_right / gold_seen, 4) if gold_seen else None,
            "trust_after_gold_median": round(float(np.median(trust)), 3), "retired": round(retired / m, 4),
            "T0_accuracy_of_retired": round(right / retired, 4) if retired else None,
            "classifications_per_retired_target": round(float(np.mean(votes)), 3) if votes else None}


def add_flips(rows: list[dict]) -> None:
    """Per N, the targets the colluders turned: retired on their answer with N of them, not without
    (N = 0: the crowd alone, whose own mistakes sometimes give that answer too)."""
    base = next((r["_on_colluders"] for r in rows if r["n"] == 0), [False] * len(rows[0]["_on_colluders"]))
    for row in rows:
        flipped = [now and not before for now, before in zip(row.pop("_on_colluders"), base, strict=True)]
        row["turned_by_colluders"] = round(float(np.mean(flipped)), 4)


def smallest(rows: list[dict], share: float) -> int | None:
    """The smallest N that turned at least ``share`` of the targets (any target for share 0)."""
    for row in rows:
        if row["n"] > 0 and (row["turned_by_colluders"] >= share if share > 0 else row["turned_by_colluders"] > 0):
            return row["n"]
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--galaxies", type=int, default=0, help="a random subset of this many usable galaxies (0: all, 6,608)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--volunteers", type=int, default=250)
    parser.add_argument("--gold-share", type=float, default=0.05)
    parser.add_argument("--gold-votes", type=int, default=10)
    parser.add_argument("--refit-every", type=int, default=2000)
    parser.add_argument("--targets", type=int, default=100, help="scored galaxies attacked for each N")
    parser.add_argument("--ns", default=",".join(str(n) for n in range(defaults.BUDGET + 1)),
                        help="colluder counts to try (default 0..40, the budget)")
    parser.add_argument("--gold-counts", default="0,1,3,5,10", help="gold galaxies each honest newcomer classifies first")
    parser.add_argument("--defaults", choices=("old", "new", "both"), default="both",
                        help="old: the engine before issue 25 (half_trust 0); new: the library's defaults")
    parser.add_argument("--json", default=None, help="write the full results to this path")
    args = parser.parse_args()

    t_all = time.monotonic()
    ids, t0, t1, _ = tree.load_galaxies()
    pick = list(range(len(ids)))
    random.Random(args.seed).shuffle(pick)
    if args.galaxies:
        pick = pick[: args.galaxies]
    pick.sort()
    t0, t1 = t0[pick], t1[pick]
    n = len(pick)
    crowd = tree.Crowd(t0, t1, args.volunteers, args.seed)
    rng = np.random.default_rng(args.seed + 3)
    order = np.stack([rng.permutation(args.volunteers)[: tree.BUDGET] for _ in range(n)])  # engine_tree's order
    gold = set(random.Random(args.seed + 5).sample(range(n), round(args.gold_share * n)))
    scored = np.array([g for g in range(n) if g not in gold])
    targets = sorted(random.Random(args.seed + 23).sample(scored.tolist(), min(args.targets, len(scored))))
    ns = [int(x) for x in args.ns.split(",")]
    gold_counts = [int(x) for x in args.gold_counts.split(",")]
    names = ["old", "new"] if args.defaults == "both" else [args.defaults]
    print(f"{n} galaxies, {len(gold)} gold, {len(scored)} scored; {len(targets)} targets; settings {names}", flush=True)

    results: dict[str, Any] = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "args": vars(args),
                               "galaxies": n, "gold": len(gold), "scored": len(scored), "targets": len(targets),
                               "half_trust": {"old": 0.0, "new": defaults.HALF_TRUST}, "runs": {}, "attack": {},
                               "newcomers": {}}
    for name in names:
        run = tree.stream(crowd, order, gold, SETTINGS[name], args.refit_every, args.gold_votes, args.seed)
        scores = score_run(run, crowd, scored)
        results["runs"][name] = scores
        print(f"[{name}] stream {scores['seconds']} s: T0 {scores['T0']['accuracy']:.2%} at {scores['T0']['votes']:.2f} votes, "
              f"T1 {scores['T1']['accuracy']:.2%}, anomalies {scores['anomalies']}", flush=True)
        engine = run["aggregator"]
        results["attack"][name] = {}
        for kind in COLLUDER_ANSWERS:
            t = time.monotonic()
            rows = [attack(engine, crowd, order, targets, k, kind) for k in ns]
            add_flips(rows)
            results["attack"][name][kind] = rows
            print(f"[{name}] attack {kind}: {time.monotonic() - t:.1f} s", flush=True)
        t = time.monotonic()
        results["newcomers"][name] = [newcomers(engine, crowd, order, targets, sorted(gold), g, args.seed) for g in gold_counts]
        print(f"[{name}] newcomers: {time.monotonic() - t:.1f} s", flush=True)

    summary: dict[str, Any] = {"smallest_n_wrong": {}, "cost": {}}
    for name in names:
        summary["smallest_n_wrong"][name] = {
            kind: {"any": smallest(results["attack"][name][kind], 0.0), "half": smallest(results["attack"][name][kind], 0.5)}
            for kind in COLLUDER_ANSWERS}
        runs = results["runs"][name]
        summary["cost"][name] = {q: {"accuracy": runs[q]["accuracy"], "votes": runs[q]["votes"]} for q in ("T0", "T1")}
    if len(names) == 2:
        old, new = results["runs"]["old"], results["runs"]["new"]
        summary["cost"]["new_minus_old_paired"] = {
            q: {k: round(v, 5) for k, v in paired_accuracy_difference(old[f"_right{i}"], new[f"_right{i}"].astype(float)).to_dict().items()
                if k in ("difference", "standard_error")}
            for i, q in enumerate(("T0", "T1"))}
    for run in results["runs"].values():
        run.pop("_right0"), run.pop("_right1")

    print()
    print("Colluders first, then the galaxy's crowd: share of targets turned (retired on the colluders' answer, "
          "not so without them), share retired by the colluders alone, crowd votes used")
    header = f"{'N':>3}"
    for name in names:
        for kind in COLLUDER_ANSWERS:
            header += f" | {name + ' ' + kind:>28}"
    print(header)
    for k in ns:
        if k not in SHOWN_NS and k != ns[-1]:
            continue
        line = f"{k:>3}"
        for name in names:
            for kind in COLLUDER_ANSWERS:
                row = next(r for r in results["attack"][name][kind] if r["n"] == k)
                votes = "—" if row["crowd_votes"] is None else f"{row['crowd_votes']:.1f}"
                line += f" | {row['turned_by_colluders']:>6.0%} ({row['retired_wrongly_by_colluders_alone']:>4.0%}) votes {votes:>5}"
        print(line)
    for name in names:
        print(f"smallest N turning a target, {name}: " + ", ".join(
            f"{kind}: any {v['any'] or 'none'}, half {v['half'] or 'none'}" for kind, v in summary["smallest_n_wrong"][name].items())
            + f" (N up to {ns[-1]})")
    print()
    print("Honest newcomers alone on the targets after G gold galaxies each")
    for name in names:
        for row in results["newcomers"][name]:
            print(f"  {name} G={row['gold_each']:>2}: trust {row['trust_after_gold_median']:.2f}, retired {row['retired']:.0%}, "
                  f"T0 accuracy {row['T0_accuracy_of_retired'] if row['T0_accuracy_of_retired'] is not None else '—'}, "
                  f"classifications {row['classifications_per_retired_target'] if row['classifications_per_retired_target'] is not None else '—'}")
    print()
    for name in names:
        c = summary["cost"][name]
        print(f"cost {name}: T0 {c['T0']['accuracy']:.2%} at {c['T0']['votes']:.2f} votes per galaxy, "
              f"T1 {c['T1']['accuracy']:.2%} at {c['T1']['votes']:.2f}")
    if "new_minus_old_paired" in summary["cost"]:
        p = summary["cost"]["new_minus_old_paired"]
        print(f"new − old, paired: T0 {p['T0']['difference']:+.2%} ± {p['T0']['standard_error']:.2%}, "
              f"T1 {p['T1']['difference']:+.2%} ± {p['T1']['standard_error']:.2%}")
    results |= summary
    results["seconds"] = round(time.monotonic() - t_all, 1)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
        print(f"written {args.json}")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
