"""The engine alone on Galaxy Zoo 1's two-question tree: what retiring on the first question costs
the second, and what whole-workflow retirement buys back.

    .venv/bin/python bench/engine_tree.py                       # every usable GZ1 galaxy (6,608): ~4 min on 2 cores
    .venv/bin/python bench/engine_tree.py --galaxies 1000 --seed 1 --json /tmp/engine_tree.json

No platform, no Django: ``aggregation.WorkflowAggregator`` in process, one simulated crowd, three
ways of spending its votes, on the tree

    T0  smooth | features or disk (-> T1) | merger | star or artifact
    T1  edge-on | clockwise | anticlockwise

(a) Galaxy Zoo 2's way: 40 volunteers per galaxy, the plurality of their answers per question (T1:
    of those among the 40 who answered T1; a tie goes to the lower answer index; no T1 answer among
    the 40 counts as wrong). Reported twice: with one draw of 40 volunteers per galaxy (the first 40
    of the galaxy's arrival order, the order (b) and (c) draw from), and as its expectation over
    draws, estimated by Monte Carlo over ``--a-draws`` random draws of 40 of the volunteers per
    galaxy (the plurality of a multi-answer question has no cheap closed form, unlike the binary
    ``aggregation.evaluation.majority_accuracy``; the standard error of that estimate is reported).
    The headline figures of (a) are the expectation.
(b) first-question retirement, ``WorkflowAggregator(TASKS, retirement={"scope": "first_question",
    "policy": "min:3,posterior:0.99,max:40"})``: the galaxy retires when T0 is settled, whatever
    T1's state.
(c) whole-workflow retirement, ``WorkflowAggregator(TASKS)`` with the library's defaults
    (``aggregation.defaults``: every required task's reach-weighted risk below 0.01, at least 3
    classifications, budget 40).

Also run by default (``--modes a,b,c`` runs only the three): ``b_difficulty`` and ``c_difficulty``, (b) and
(c) with the estimator option ``{"difficulty": True}`` (``aggregation.difficulty``: a difficulty per
galaxy in every node's model), a diagnostic of why (b) and (c) fall where they do, not a tuning:
the headline (b) and (c) are the library's defaults.

(b) and (c) are live queues: at each step a random active galaxy (seeded; active = not retired and
under its budget) gets its next volunteer's classification, streamed through
``add_classification(galaxy, volunteer, [{"task": "T0", ...}, {"task": "T1", ...}])`` (T1 only when the
volunteer's T0 answer is "features or disk"), with ``agg.refit()`` every ``--refit-every``
classifications (2,000, machine_loop's batch refit). Labels are the argmax of ``agg.posterior(galaxy,
task)`` read at retirement (the headline), and again at the end after a final refit. Votes: on T0, the
classifications a galaxy received; on T1, the T1 answers it received, per galaxy (all scored
galaxies) and per disk galaxy. T0 accuracy is over every scored galaxy, T1 accuracy over the scored
galaxies whose true T0 is "features or disk". ``paired`` compares (b) and (c) with (a)'s expectation
galaxy by galaxy (``aggregation.evaluation.paired_accuracy_difference``).

Gold: a random ``--gold-share`` (5%, as machine_loop's full run) of the galaxies are gold (``gold=
{"T0": t0, "T1": t1}``, T1 only for disks): they sit in the same queue, never retire, leave it after
``--gold-votes`` classifications, teach skills, and are left out of every score (their votes are
reported apart, ``gold_votes_per_scored_galaxy``).

Truth, from ``../shared/data/galaxies/gz1/labels.csv`` (columns ``OBJID,CLASS``: GZ1's leaf classes
derived from its volunteers' votes; this file holds no vote fractions): class 0 elliptical -> T0
smooth; 1 clockwise, 2 anticlockwise, 3 edge-on -> T0 features or disk, T1 clockwise /
anticlockwise / edge-on (GZ1's button was "edge-on or unclear"); 5 merger -> T0 merger; class 4 (56
galaxies) is GZ1's single "star or don't know" button, which mixes a star or artifact with an
unanswerable image: ambiguous truth, dropped. So "star or artifact" is an answer volunteers give but
never the truth. 6,608 galaxies remain.

The simulated crowd (``--volunteers`` 250, machine_loop's ideas, written out here because
``bench/machine_loop.py`` imports the platform at module level):

- A galaxy's difficulty per question is a real Galaxy Zoo vote split whose plurality is its true
  answer, drawn at random within that class: an average volunteer answers right with the split's
  share for the truth, q, and a wrong answer is drawn in proportion to the split's other shares.
- T0: a real Galaxy Zoo DECaLS subject (``../shared/data/zooniverse/gz_decals_smooth_featured_votes.
  csv``: smooth, featured_or_disk, artifact votes), + 0.5 pseudo-vote on each of the four answers
  (merger included, which that question does not offer). A merger galaxy (no real merger split here)
  takes a featured-majority subject, its featured votes read as merger and its smooth votes as
  "features or disk" (the answer a merger is most often mistaken for), artifact as artifact.
- T1: from the Galaxy Zoo DECaLS fractions of ``../shared/data/galaxies/decals_rings/catalog.csv``
  (470 real featured galaxies) on the two questions that make up T1: edge-on or not (e = the share
  saying edge-on) and spiral arms or not (m = the share seeing arms). A face-on spiral (true
  clockwise or anticlockwise) gets edge-on e, the right direction (1 − e)(m + (1 − m)/2) and the
  wrong one (1 − e)(1 − m)/2: a volunteer who sees no arms can only guess the winding. The catalog
  holds face-on galaxies only (every e < 0.25), so an edge-on galaxy takes a row mirrored: edge-on
  1 − e, each direction e/2 (a real edge-on disk assumed as clear-cut as a real face-on one).
  Only rows whose plurality is the truth are used. The catalog is a ring sample, where arms are
  rarer than among GZ1's spirals, so winding is harder here than it probably was for GZ1.
- A volunteer's skill per question, from real crowds as machine_loop draws it: every worker of the
  duck and dog crowds (``../shared/data/crowds``, at least 20 answers) gives a = (right + 1) /
  (answers + 2); a simulated volunteer draws one for T0 and, independently, one for T1, as offsets
  d = logit(a) − mean logit(a); it answers right with probability sigmoid(logit(q) + d).
- A volunteer who answers "features or disk" on a galaxy that is not a disk also answers T1, drawn
  from the share of each T1 class among GZ1's disks (edge-on 54%, clockwise 22%, anticlockwise 24%).
- Every volunteer's answers to every galaxy are drawn once, so (a), (b) and (c) see the same answer
  from the same volunteer; each galaxy's volunteers arrive in a random order of their own (seeded),
  each at most once.

Prints a table and, last, one JSON line: ``{"T0": {"a": {"accuracy", "votes", ...}, "b": ..., "c":
...}, "T1": ...}``. ``--json PATH`` writes the full results there.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT))

from real_crowds import logit, real_worker_offsets  # noqa: E402  (bench/, beside this script; machine_loop's too)

from aggregation import WorkflowAggregator  # noqa: E402
from aggregation.evaluation import paired_accuracy_difference  # noqa: E402

TASKS = {
    "T0": {"type": "single", "question": "Is the galaxy smooth, with features or a disk, a merger, or a star/artifact?",
           "answers": [{"label": "smooth", "next": None}, {"label": "features or disk", "next": "T1"},
                       {"label": "merger", "next": None}, {"label": "star or artifact", "next": None}]},
    "T1": {"type": "single", "question": "Edge-on, or spiral arms clockwise / anticlockwise?",
           "answers": [{"label": "edge-on", "next": None}, {"label": "clockwise", "next": None},
                       {"label": "anticlockwise", "next": None}],
           "mirror_swaps": [[1, 2]]},  # what a mirror image swaps (the engine ignores it; the CNN uses it)
}
SMOOTH, DISK, MERGER, ARTIFACT = range(4)
EDGE_ON, CLOCKWISE, ANTICLOCKWISE = range(3)
# GZ1 class -> (T0 truth, T1 truth or -1); class 4 ("star or don't know") is dropped
GZ1_CLASSES = {"0": (SMOOTH, -1), "1": (DISK, CLOCKWISE), "2": (DISK, ANTICLOCKWISE), "3": (DISK, EDGE_ON),
               "5": (MERGER, -1)}
FIRST_QUESTION = {"scope": "first_question", "policy": "min:3,posterior:0.99,max:40"}
DIFFICULTY = {"difficulty": True}
# (key, retirement settings (None: the library's defaults), estimator options (None: the library's defaults))
STREAM_MODES = (("b", FIRST_QUESTION, None), ("c", None, None),
                ("b_difficulty", FIRST_QUESTION, DIFFICULTY), ("c_difficulty", None, DIFFICULTY))
BUDGET = 40



def load_galaxies() -> tuple[list[str], np.ndarray, np.ndarray, Counter]:
    """GZ1 galaxies with an unambiguous truth: ids, T0 truth, T1 truth (-1: not a disk); and the
    count of each GZ1 class dropped."""
    ids, t0, t1 = [], [], []
    dropped: Counter = Counter()
    with open(DATA / "galaxies" / "gz1" / "labels.csv", encoding="utf-8") as handle:
        for r in csv.DictReader(handle):
            if r["CLASS"] not in GZ1_CLASSES:
                dropped[r["CLASS"]] += 1
                continue
            ids.append(r["OBJID"])
            t0.append(GZ1_CLASSES[r["CLASS"]][0])
            t1.append(GZ1_CLASSES[r["CLASS"]][1])
    return ids, np.array(t0), np.array(t1), dropped


def t0_splits() -> dict[int, np.ndarray]:
    """Per T0 truth: real vote splits (rows of shares over the four T0 answers) whose plurality it is."""
    rows: dict[int, list[list[float]]] = {SMOOTH: [], DISK: [], MERGER: []}
    with open(DATA / "zooniverse" / "gz_decals_smooth_featured_votes.csv", encoding="utf-8") as handle:
        for r in csv.DictReader(handle):
            s, f, a = float(r["smooth"]), float(r["featured_or_disk"]), float(r["artifact"])
            if s + f + a < 5:
                continue
            if s > max(f, a):
                rows[SMOOTH].append([s + 0.5, f + 0.5, 0.5, a + 0.5])
            elif f > max(s, a):
                rows[DISK].append([s + 0.5, f + 0.5, 0.5, a + 0.5])
                rows[MERGER].append([0.5, s + 0.5, f + 0.5, a + 0.5])
    return {k: np.asarray(v) / np.sum(v, axis=1, keepdims=True) for k, v in rows.items()}


def t1_splits() -> dict[int, np.ndarray]:
    """Per T1 truth: splits over (edge-on, clockwise, anticlockwise) from the DECaLS disk fractions."""
    rows: dict[int, list[list[float]]] = {EDGE_ON: [], CLOCKWISE: [], ANTICLOCKWISE: []}
    with open(DATA / "galaxies" / "decals_rings" / "catalog.csv", encoding="utf-8") as handle:
        for r in csv.DictReader(handle):
            e = 1.0 - float(r["disk-edge-on_no_fraction"])
            m = 1.0 - float(r["has-spiral-arms_no_fraction"])
            right, wrong = (1 - e) * (m + (1 - m) / 2), (1 - e) * (1 - m) / 2
            candidates = {CLOCKWISE: [e, right, wrong], ANTICLOCKWISE: [e, wrong, right], EDGE_ON: [1 - e, e / 2, e / 2]}
            for truth, split in candidates.items():
                if split[truth] > max(x for i, x in enumerate(split) if i != truth):
                    rows[truth].append(split)
    out = {k: np.clip(np.asarray(v), 1e-3, None) for k, v in rows.items()}
    return {k: v / v.sum(axis=1, keepdims=True) for k, v in out.items()}


def draw_answers(truth: np.ndarray, splits: np.ndarray, offsets: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Answers (volunteers × galaxies): right with sigmoid(logit(q) + d), else a wrong answer in
    proportion to the galaxy's split's other shares."""
    n_galaxies, k = splits.shape
    q = splits[np.arange(n_galaxies), truth]
    p_right = 1 / (1 + np.exp(-(logit(q)[None, :] + offsets[:, None])))
    right = rng.random(p_right.shape) < p_right
    wrong = splits.copy()
    wrong[np.arange(n_galaxies), truth] = 0.0
    cum = np.cumsum(wrong / wrong.sum(axis=1, keepdims=True), axis=1)
    u = rng.random(p_right.shape)
    wrong_answer = np.minimum((u[:, :, None] > cum[None, :, :]).sum(axis=2), k - 1)
    return np.where(right, truth[None, :], wrong_answer).astype(np.int8)


class Crowd:
    """Every simulated volunteer's answers to every galaxy (see the module docstring)."""

    def __init__(self, t0: np.ndarray, t1: np.ndarray, n_volunteers: int, seed: int) -> None:
        rng = np.random.default_rng(seed)
        offsets = real_worker_offsets()
        self.t0, self.t1 = t0, t1
        self.d0 = rng.choice(offsets, n_volunteers)
        self.d1 = rng.choice(offsets, n_volunteers)
        s0, s1 = t0_splits(), t1_splits()
        n = len(t0)
        self.split0 = np.array([s0[int(y)][rng.integers(len(s0[int(y)]))] for y in t0])
        disk = t1 >= 0
        mix = np.bincount(t1[disk], minlength=3) / disk.sum()
        self.t1_mix = mix
        # a non-disk galaxy's T1 "truth" for drawing only: its answers are drawn from the disks' class mix
        self.split1 = np.tile(mix, (n, 1))
        self.split1[disk] = [s1[int(y)][rng.integers(len(s1[int(y)]))] for y in t1[disk]]
        self.a0 = draw_answers(t0, self.split0, self.d0, rng)
        self.a1 = draw_answers(np.where(disk, t1, 0), self.split1, self.d1, rng)
        non_disk = np.flatnonzero(~disk)  # answers from the mix itself, no right or wrong
        u = rng.random((n_volunteers, len(non_disk)))
        self.a1[:, non_disk] = np.minimum((u[:, :, None] > np.cumsum(mix)[None, None, :]).sum(axis=2), 2)

    def describe(self) -> dict:
        disk = self.t1 >= 0
        q0 = self.split0[np.arange(len(self.t0)), self.t0]
        q1 = self.split1[np.flatnonzero(disk), self.t1[disk]]
        right0 = (self.a0 == self.t0[None, :]).mean()
        says_disk = self.a0[:, disk] == DISK
        right1 = (self.a1[:, disk] == self.t1[None, disk])[says_disk].mean()
        return {
            "volunteers": len(self.d0),
            "T0_share_right_quartiles": [round(float(x), 3) for x in np.quantile(q0, [0.25, 0.5, 0.75])],
            "T1_share_right_quartiles_disks": [round(float(x), 3) for x in np.quantile(q1, [0.25, 0.5, 0.75])],
            "T0_answers_right": round(float(right0), 4),
            "T1_answers_right_on_disks": round(float(right1), 4),
            "disks_answering_T1": round(float(says_disk.mean()), 4),
            "T1_mix_off_disks": [round(float(x), 3) for x in self.t1_mix],
        }


def plurality(answers: np.ndarray, k: int, valid: np.ndarray | None = None) -> np.ndarray:
    """Per row, the most frequent answer (ties: the lowest index; -1 where no answer is valid)."""
    onehot = answers[..., None] == np.arange(k)
    if valid is not None:
        onehot &= valid[..., None]
    counts = onehot.sum(axis=-2)
    return np.where(counts.sum(axis=-1) > 0, counts.argmax(axis=-1), -1)


def mode_a(crowd: Crowd, order: np.ndarray, galaxies: np.ndarray, draws: int, seed: int) -> dict[str, Any]:
    """40 per galaxy, plurality per question: one draw (the arrival order's first 40) and the
    expectation over ``draws`` random draws, per galaxy (arrays over ``galaxies``)."""
    rng = np.random.default_rng(seed + 7)
    n_vol = crowd.a0.shape[0]
    one0 = np.zeros(len(galaxies), bool)
    one1 = np.zeros(len(galaxies), bool)
    exp0 = np.zeros(len(galaxies))
    exp1 = np.zeros(len(galaxies))
    one_t1_votes = np.zeros(len(galaxies))
    for i, g in enumerate(galaxies):
        who = order[g, :BUDGET]
        a0, a1 = crowd.a0[who, g], crowd.a1[who, g]
        one0[i] = plurality(a0, 4) == crowd.t0[g]
        one1[i] = plurality(a1, 3, a0 == DISK) == crowd.t1[g]
        one_t1_votes[i] = (a0 == DISK).sum()
        many = np.argpartition(rng.random((draws, n_vol)), BUDGET, axis=1)[:, :BUDGET]
        b0, b1 = crowd.a0[many, g], crowd.a1[many, g]
        exp0[i] = (plurality(b0, 4) == crowd.t0[g]).mean()
        exp1[i] = (plurality(b1, 3, b0 == DISK) == crowd.t1[g]).mean()
    # expected T1 answers among 40 random volunteers: 40 × the share who answer "features or disk"
    t1_votes = BUDGET * (crowd.a0[:, galaxies] == DISK).mean(axis=0)
    return {"one0": one0, "one1": one1, "exp0": exp0, "exp1": exp1, "t1_votes": t1_votes, "one_t1_votes": one_t1_votes}


def stream(crowd: Crowd, order: np.ndarray, gold: set[int], retirement: dict | None, refit_every: int,
           gold_votes: int, seed: int, estimator_options: dict | None = None) -> dict[str, Any]:
    """A live queue over every galaxy through one ``WorkflowAggregator`` (see the module docstring)."""
    agg = WorkflowAggregator(TASKS, retirement=retirement, estimator_options=estimator_options)
    n = len(crowd.t0)
    rng = random.Random(seed + 11)
    active = list(range(n))
    position = {g: i for i, g in enumerate(active)}
    given = np.zeros(n, int)
    t1_given = np.zeros(n, int)
    at_retirement: dict[int, tuple[int, int, str, int, int]] = {}  # galaxy -> (T0 label, T1 label, reason, votes, T1 votes)
    anomalies: list[str] = []
    refits = refit_seconds = 0.0
    since_refit = 0
    t_start = time.monotonic()

    def remove(g: int) -> None:
        i = position.pop(g)
        last = active.pop()
        if last != g:
            active[i] = last
            position[last] = i

    def record(g: int, reason: str) -> None:
        p0, p1 = agg.posterior(g, "T0"), agg.posterior(g, "T1")
        at_retirement[g] = (int(np.argmax(p0)), int(np.argmax(p1)), reason, int(given[g]), int(t1_given[g]))

    while active:
        g = active[rng.randrange(len(active))]
        v = int(order[g, given[g]])
        a0 = int(crowd.a0[v, g])
        annotations = [{"task": "T0", "value": a0}]
        if a0 == DISK:
            annotations.append({"task": "T1", "value": int(crowd.a1[v, g])})
            t1_given[g] += 1
        given[g] += 1
        gold_truth = None
        if g in gold:
            gold_truth = {"T0": int(crowd.t0[g])} | ({"T1": int(crowd.t1[g])} if crowd.t1[g] >= 0 else {})
        decision = agg.add_classification(g, v, annotations, gold=gold_truth)
        if decision.newly_retired:
            record(g, str(decision.retired))
            remove(g)
        elif given[g] >= (gold_votes if g in gold else BUDGET):
            if g not in gold:
                anomalies.append(f"galaxy {g}: {given[g]} classifications, not retired ({decision.retired})")
            remove(g)
        since_refit += 1
        if since_refit >= refit_every:
            since_refit = 0
            t = time.monotonic()
            newly = agg.refit()
            refit_seconds += time.monotonic() - t
            refits += 1
            for s in newly:
                record(int(s), str(agg.retirement_reason(s)))
                if s in position:
                    remove(int(s))
                else:
                    anomalies.append(f"galaxy {s}: retired by a refit but not in the queue")
    agg.refit()
    end = {g: (int(np.argmax(agg.posterior(g, "T0"))), int(np.argmax(agg.posterior(g, "T1")))) for g in range(n)}
    return {"at_retirement": at_retirement, "end": end, "given": given, "t1_given": t1_given, "anomalies": anomalies,
            "refits": int(refits), "refit_seconds": round(refit_seconds, 1), "seconds": round(time.monotonic() - t_start, 1),
            "classifications": int(given.sum()), "aggregator": agg}


def _paired(a: np.ndarray, b: np.ndarray) -> dict:
    d = paired_accuracy_difference(a, b.astype(float)).to_dict()
    return {k: round(d[k], 5) for k in ("n", "difference", "standard_error")} | {"interval": [round(x, 5) for x in d["interval"]]}


def score_stream(run: dict[str, Any], crowd: Crowd, scored: np.ndarray, a: dict[str, Any]) -> dict[str, dict]:
    """Per question: accuracy at retirement (and at the end), votes, paired difference with (a)."""
    disk_mask = crowd.t1[scored] >= 0
    disks = scored[disk_mask]
    unretired = [g for g in scored if g not in run["at_retirement"]]
    lab0 = np.array([run["at_retirement"].get(g, (-1, -1))[0] for g in scored])
    lab1 = np.array([run["at_retirement"].get(g, (-1, -1))[1] for g in disks])
    end0 = np.array([run["end"][g][0] for g in scored])
    end1 = np.array([run["end"][g][1] for g in disks])
    right0, right1 = lab0 == crowd.t0[scored], lab1 == crowd.t1[disks]
    reasons = Counter(run["at_retirement"][g][2] for g in scored if g in run["at_retirement"])
    no_t1 = run["t1_given"][disks] == 0
    said_disk = np.array([run["at_retirement"].get(g, (-1,))[0] == DISK for g in disks])
    by_t0_label = {name: {"n": int(m.sum()), "accuracy": round(float(right1[m].mean()), 4) if m.any() else None}
                   for name, m in (("T0_label_disk", said_disk), ("T0_label_not_disk", ~said_disk))}
    return {
        "T0": {"accuracy": round(float(right0.mean()), 4), "votes": round(float(run["given"][scored].mean()), 3),
               "accuracy_at_end": round(float((end0 == crowd.t0[scored]).mean()), 4),
               "paired_vs_a_expected": _paired(a["exp0"], right0), "retired_by": dict(reasons),
               "unretired": len(unretired), "n": len(scored)},
        "T1": {"accuracy": round(float(right1.mean()), 4), "votes": round(float(run["t1_given"][scored].mean()), 3),
               "votes_per_disk_galaxy": round(float(run["t1_given"][disks].mean()), 3),
               "accuracy_at_end": round(float((end1 == crowd.t1[disks]).mean()), 4),
               "paired_vs_a_expected": _paired(a["exp1"][disk_mask], right1),
               "disks_without_T1_answer": int(no_t1.sum()),
               "accuracy_on_disks_without_T1_answer": round(float(right1[no_t1].mean()), 4) if no_t1.any() else None,
               "by_engine_T0_label": by_t0_label,
               "n": len(disks)},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--galaxies", type=int, default=0, help="a random subset of this many usable galaxies (0: all, 6,608)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--volunteers", type=int, default=250)
    parser.add_argument("--gold-share", type=float, default=0.05)
    parser.add_argument("--gold-votes", type=int, default=10, help="classifications a gold galaxy gets before it leaves the queue")
    parser.add_argument("--refit-every", type=int, default=2000)
    parser.add_argument("--a-draws", type=int, default=200, help="random draws of 40 per galaxy for (a)'s expectation")
    parser.add_argument("--modes", default="a,b,c,b_difficulty,c_difficulty",
                        help="comma-separated: a, b, c, and b_difficulty, c_difficulty (b and c with the estimator option difficulty)")
    parser.add_argument("--json", default=None, help="write the full results to this path")
    args = parser.parse_args()

    t_all = time.monotonic()
    ids, t0, t1, dropped = load_galaxies()
    pick = list(range(len(ids)))
    random.Random(args.seed).shuffle(pick)
    if args.galaxies:
        pick = pick[: args.galaxies]
    pick.sort()
    t0, t1 = t0[pick], t1[pick]
    n = len(pick)
    crowd = Crowd(t0, t1, args.volunteers, args.seed)
    rng = np.random.default_rng(args.seed + 3)
    order = np.stack([rng.permutation(args.volunteers)[:BUDGET] for _ in range(n)])
    gold = set(random.Random(args.seed + 5).sample(range(n), round(args.gold_share * n)))
    scored = np.array([g for g in range(n) if g not in gold])
    disk_mask = t1[scored] >= 0
    print(f"{n} galaxies (GZ1 classes dropped: {dict(dropped)}), {len(gold)} gold, {len(scored)} scored "
          f"({int(disk_mask.sum())} disks); T0 truth {dict(Counter(t0[scored].tolist()))}", flush=True)
    print(f"crowd {json.dumps(crowd.describe())}", flush=True)

    results: dict[str, Any] = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "args": vars(args),
                               "galaxies": n, "gold": len(gold), "scored": len(scored), "scored_disks": int(disk_mask.sum()),
                               "dropped_gz1_classes": dict(dropped), "crowd": crowd.describe()}
    summary: dict[str, dict] = {"T0": {}, "T1": {}}
    t = time.monotonic()
    a = mode_a(crowd, order, scored, args.a_draws, args.seed)
    se0 = float(a["exp0"].std(ddof=1) / np.sqrt(len(scored) * args.a_draws))
    se1 = float(a["exp1"][disk_mask].std(ddof=1) / np.sqrt(disk_mask.sum() * args.a_draws))
    summary["T0"]["a"] = {"accuracy": round(float(a["exp0"].mean()), 4), "votes": float(BUDGET),
                          "accuracy_one_draw": round(float(a["one0"].mean()), 4), "monte_carlo_se": round(se0, 5),
                          "n": len(scored)}
    summary["T1"]["a"] = {"accuracy": round(float(a["exp1"][disk_mask].mean()), 4),
                          "votes": round(float(a["t1_votes"].mean()), 3),
                          "votes_per_disk_galaxy": round(float(a["t1_votes"][disk_mask].mean()), 3),
                          "accuracy_one_draw": round(float(a["one1"][disk_mask].mean()), 4), "monte_carlo_se": round(se1, 5),
                          "n": int(disk_mask.sum())}
    print(f"(a) {time.monotonic() - t:.1f} s", flush=True)
    results["runs"] = {}
    for key, retirement, options in STREAM_MODES:
        if key not in args.modes.split(","):
            continue
        run = stream(crowd, order, gold, retirement, args.refit_every, args.gold_votes, args.seed, options)
        scores = score_stream(run, crowd, scored, a)
        summary["T0"][key], summary["T1"][key] = scores["T0"], scores["T1"]
        gold_list = sorted(gold)
        results["runs"][key] = {"retirement": retirement or "library defaults (scope workflow)",
                                "estimator_options": options or "library defaults", "seconds": run["seconds"],
                                "classifications": run["classifications"], "refits": run["refits"],
                                "refit_seconds": run["refit_seconds"], "anomalies": run["anomalies"][:20],
                                "n_anomalies": len(run["anomalies"]),
                                "gold_votes_per_scored_galaxy": round(float(run["given"][gold_list].sum() / len(scored)), 3)}
        print(f"({key}) {run['seconds']:.1f} s, {run['classifications']} classifications, {run['refits']} refits "
              f"({run['refit_seconds']:.1f} s), anomalies {len(run['anomalies'])}", flush=True)

    names = {"a": "(a) 40 each, plurality", "b": "(b) first-question retirement", "c": "(c) whole-workflow retirement",
             "b_difficulty": "(b) + estimator difficulty", "c_difficulty": "(c) + estimator difficulty"}
    print()
    print(f"{'mode':32} {'T0 acc':>8} {'T0 votes':>9} {'T1 acc':>8} {'T1 votes':>9} {'T1/disk':>8} {'T0 end':>8} {'T1 end':>8}")
    for key in summary["T0"]:
        s0, s1 = summary["T0"][key], summary["T1"][key]
        print(f"{names[key]:32} {s0['accuracy']:8.2%} {s0['votes']:9.2f} {s1['accuracy']:8.2%} {s1['votes']:9.2f} "
              f"{s1['votes_per_disk_galaxy']:8.2f} {s0.get('accuracy_at_end', s0.get('accuracy_one_draw')):8.2%} "
              f"{s1.get('accuracy_at_end', s1.get('accuracy_one_draw')):8.2%}")
    print("(T0 end / T1 end: (a) one draw of 40; (b), (c) the labels after a final refit)")
    for key in names:
        if key != "a" and key in summary["T0"]:
            p0, p1 = summary["T0"][key]["paired_vs_a_expected"], summary["T1"][key]["paired_vs_a_expected"]
            print(f"{key} − a (paired): T0 {p0['difference']:+.2%} ± {p0['standard_error']:.2%}, "
                  f"T1 {p1['difference']:+.2%} ± {p1['standard_error']:.2%}; retired by {summary['T0'][key]['retired_by']}; "
                  f"disks with no T1 answer {summary['T1'][key]['disks_without_T1_answer']}; "
                  f"T1 on disks by the engine's T0 label {summary['T1'][key]['by_engine_T0_label']}")
    results |= summary
    results["seconds"] = round(time.monotonic() - t_all, 1)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
        print(f"written {args.json}")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
