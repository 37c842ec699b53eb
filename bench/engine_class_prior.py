"""The engine alone on GZ1 without the platform: a fixed uniform class prior against a learned one.

    .venv/bin/python bench/engine_class_prior.py                      # three crowds, ~1 minute here
    .venv/bin/python bench/engine_class_prior.py --seeds 0 1 2 3 4 --out bench/results/engine_class_prior.json
    .venv/bin/python bench/engine_class_prior.py --posteriors 0.995 0.997 0.999 --out bench/results/engine_posterior.json
    .venv/bin/python bench/engine_class_prior.py --skip-priors --difficulty-posteriors 0.95 0.97 --out bench/results/engine_difficulty_online.json
    .venv/bin/python bench/engine_class_prior.py --skip-priors --order-seeds 100 200 [--refit-start 250] --out bench/results/engine_arrival_order.json

Mode (b) of ``bench/machine_loop.py`` (the platform's engine, policy ``min:3,posterior:0.99,max:40``, skills
learned online from consensus, a batch refit every ``--refit-every`` answers), replayed in-process on the
same simulated crowd (``machine_loop.Crowd``: real galaxy difficulty and real volunteer skills) in
seconds instead of ten minutes, to compare engine settings:

- ``uniform``: the class prior fixed at 50:50 (the platform's default until 2026-11);
- ``learned``: every refit re-estimates it (``learn_class_prior``, the platform's default now);
- ``true share``: fixed at the real share of featured galaxies, which no real project knows;
- with ``--posteriors``, also the learned prior at other consensus thresholds than 0.99: what each
  costs in votes and gains in accuracy against (a) (``bench/results/engine_posterior.json``);
- with ``--order-seeds``, the learned prior again with the volunteers arriving in other orders: the
  engine learns online, and the order alone moves its votes and accuracy (``bench/results/engine_arrival_order.json``);
  ``--refit-start`` refits early and often at first (after 250, 500, 1,000 answers, ...);
- with ``--difficulty-posteriors``, the engine with a difficulty per galaxy (estimator option
  ``difficulty``, ``aggregation.difficulty``) at those thresholds (``bench/results/engine_difficulty_online.json``).

The queue is the platform's for a workflow without active learning: each visit, a volunteer gets the
10 unretired galaxies of lowest id it has not seen (``ORDER BY priority DESC, subject_id``); gold
galaxies come last, as in the bench. (a) is GZ2's 40 votes by majority on the same crowd
(``machine_loop.offline_majority``). Figures: human votes per retired galaxy and accuracy of the
retired labels against GZ1, every non-gold galaxy.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine_loop import ENGINE_POSTERIOR, Crowd, engine_policy, gold_indices, gz1_galaxies, offline_majority  # noqa: E402

from aggregation.estimator import ConsensusEstimator  # noqa: E402
from aggregation.retirement import parse_policy  # noqa: E402


def engine_alone(crowd: Crowd, gold: set[int], options: dict, refit_every: int, per_visit: int, seed: int,
                 posterior: float = ENGINE_POSTERIOR, refit_start: int = 0) -> dict:
    """Volunteers visit until every non-gold galaxy is retired; returns votes and accuracy. ``seed``
    orders the volunteers' arrivals; ``refit_start`` > 0: the first refit after that many answers,
    the next ones at double the answers so far until the gap reaches ``refit_every``."""
    n_galaxies, n_volunteers = len(crowd.labels), len(crowd.offsets)
    estimator = ConsensusEstimator(2, policy=parse_policy(engine_policy(posterior)), **options)
    queue = [g for g in range(n_galaxies) if g not in gold] + sorted(gold)
    seen: list[set[int]] = [set() for _ in range(n_volunteers)]
    answers_of = np.zeros(n_galaxies, dtype=int)
    labels: dict[int, int] = {}
    rng = random.Random(seed)
    votes = answers = 0
    next_refit = refit_start or refit_every
    while any(g not in gold for g in queue):
        v = rng.randrange(n_volunteers)
        visit = [g for g in queue if g not in seen[v]][:per_visit]
        for g in visit:
            seen[v].add(g)
            answers_of[g] += 1
            decision = estimator.add_answer(g, v, crowd.answer(v, g), gold=int(crowd.labels[g]) if g in gold else None)
            if g in gold:
                continue
            votes += 1
            if decision.retired is not None:
                labels[g] = int(np.argmax(decision.posterior))
        answers += len(visit)
        if refit_every and answers >= next_refit:
            next_refit = min(2 * answers, answers + refit_every) if refit_start else answers + refit_every
            for g in estimator.refit():
                labels[int(g)] = int(np.argmax(estimator.predict_proba([g])[0]))
        queue = [g for g in queue if g not in labels and answers_of[g] < 40]
    right = sum(labels[g] == crowd.labels[g] for g in labels)
    retired_by: dict[str, list[int]] = {}  # how each retirement rule did: galaxies, their accuracy and votes
    reasons = estimator.retired()
    for g in labels:
        retired_by.setdefault(reasons[g], []).append(g)
    by_reason = {reason: {"galaxies": len(mine), "accuracy": round(sum(labels[g] == crowd.labels[g] for g in mine) / len(mine), 4),
                          "votes_per_galaxy": round(float(answers_of[mine].mean()), 2)} for reason, mine in sorted(retired_by.items())}
    return {"by_reason": by_reason, "human_votes_per_retired_galaxy": round(votes / len(labels), 3), "accuracy_of_retired": round(right / len(labels), 4),
            "retired": len(labels), "class_prior_at_end": [round(float(x), 3) for x in estimator.class_prior_]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--galaxies", type=int, default=6493)
    parser.add_argument("--volunteers", type=int, default=250)
    parser.add_argument("--gold-share", type=float, default=0.05)
    parser.add_argument("--refit-every", type=int, default=2000)
    parser.add_argument("--refit-start", type=int, default=0,
                        help="first refit after this many answers, then at doubling counts up to --refit-every apart (0: every --refit-every)")
    parser.add_argument("--order-seeds", type=int, nargs="*", default=[],
                        help="also run the learned prior with the volunteers arriving in these other orders (the crowd stays the seed's)")
    parser.add_argument("--per-visit", type=int, default=10)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--posteriors", type=float, nargs="*", default=[],
                        help="also run the learned prior with these consensus thresholds instead of 0.99")
    parser.add_argument("--difficulty-posteriors", type=float, nargs="*", default=[],
                        help="also run the learned prior with the difficulty model (estimator option difficulty) at these thresholds")
    parser.add_argument("--skip-priors", action="store_true", help="leave out the uniform / learned / true-share comparison "
                        "(the learned prior at 0.99, the platform's default, always runs: the baseline)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    results: dict = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "args": {k: str(v) for k, v in vars(args).items()}, "runs": []}
    for seed in args.seeds:
        galaxies = gz1_galaxies(args.galaxies, seed)
        labels = np.array([y for _, y in galaxies])
        crowd = Crowd(labels, args.volunteers, seed)
        gold = gold_indices(len(galaxies), args.gold_share, random.Random(seed))  # the same gold as machine_loop
        non_gold = [g for g in range(len(galaxies)) if g not in gold]
        share = float(labels[non_gold].mean())
        run = {"seed": seed, "featured_share": round(share, 4), "a_40_votes_majority": offline_majority(crowd, non_gold, 40, seed)}
        settings = (("uniform", {"learn_class_prior": False}), ("learned", {"learn_class_prior": True}),
                    ("true share", {"class_prior": [1 - share, share], "learn_class_prior": False}))
        for name, options in settings[1:2] if args.skip_priors else settings:
            t0 = time.monotonic()
            run[name] = engine_alone(crowd, gold, options, args.refit_every, args.per_visit, seed, refit_start=args.refit_start) | {
                "seconds": round(time.monotonic() - t0, 1)}
        for order in args.order_seeds:  # the same crowd, another arrival order: how much the order alone moves the figures
            run[f"learned, arrival order {order}"] = engine_alone(crowd, gold, {"learn_class_prior": True}, args.refit_every, args.per_visit,
                                                                 order, refit_start=args.refit_start)
        for label, options, posteriors in (("learned", {"learn_class_prior": True}, args.posteriors),
                                           ("difficulty", {"learn_class_prior": True, "difficulty": True}, args.difficulty_posteriors)):
            for posterior in posteriors:
                t0 = time.monotonic()
                run[f"{label}, posterior {posterior:g}"] = engine_alone(
                    crowd, gold, options, args.refit_every, args.per_visit, seed, posterior, args.refit_start) | {"seconds": round(time.monotonic() - t0, 1)}
        print(json.dumps(run), flush=True)
        results["runs"].append(run)
    if args.out:
        args.out.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
