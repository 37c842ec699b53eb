"""Rebuild the demo's committed data from the real data in ``../shared/data`` (run once, by hand).

    .venv/bin/python platform/demo_data/build.py

Writes, next to this file (see README.md here for what each is and its credits):

- ``gz1_2000/``: 2,000 SDSS galaxies with Galaxy Zoo 1 classes (none of the 48 of ``gz1/``), as
  96×96 JPEG (quality 85), and ``manifest.csv`` in the format ``import_subjects`` reads;
- ``crowd_skills.json``: the confusion matrices of the real workers of the dog crowd;
- ``vote_shares.csv``: a random 1,000 of the real Galaxy Zoo DECaLS subjects' majority vote shares.

The demo itself never reads ``../shared``: only what this script wrote.
"""

from __future__ import annotations

import csv
import json
import random
from collections import defaultdict
from pathlib import Path

from PIL import Image

HERE = Path(__file__).resolve().parent
SHARED = HERE.parents[2] / "shared" / "data"
SIZE = 96
QUALITY = 85
N_GALAXIES = 2000
GOLD_SHARE = 0.05
N_SHARES = 1000
SEED = 2024
# GZ1 class -> answer of T0 (0 smooth, 1 features or disk, 2 merger, 3 star or artifact) and T1.
T0_OF_CLASS = {0: 0, 1: 1, 2: 1, 3: 1, 4: 3, 5: 2}
T1_OF_CLASS = {3: 0, 1: 1, 2: 2}


def truth_cells(cls: int) -> list[object]:
    """The hidden ``#truth.T0`` and ``#truth.T1`` cells of a galaxy of GZ1 class ``cls``: the answers the
    dashboard's tally scores retired galaxies against (never given to the engine; class 4, "don't
    know", has none, as it is never gold)."""
    return ["" if cls == 4 else T0_OF_CLASS[cls], T1_OF_CLASS.get(cls, "")]


def build_galaxies(rng: random.Random) -> None:
    """The 2,000 galaxies: a random sample of GZ1 outside the 48 of the small sample."""
    with open(HERE / "gz1" / "manifest.csv", encoding="utf-8") as handle:
        small = {row["external_id"] for row in csv.DictReader(handle)}
    with open(SHARED / "galaxies" / "gz1" / "labels.csv", encoding="utf-8") as handle:
        rows = [(r["OBJID"], int(r["CLASS"])) for r in csv.DictReader(handle) if r["OBJID"] not in small]
    rows.sort()
    chosen = rng.sample(rows, N_GALAXIES)
    gold = set(rng.sample(range(N_GALAXIES), round(GOLD_SHARE * N_GALAXIES)))
    out = HERE / "gz1_2000"
    (out / "images").mkdir(parents=True, exist_ok=True)
    with open(out / "manifest.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["external_id", "image", "gold.T0", "gold.T1", "#gz1_class", "#truth.T0", "#truth.T1", "survey"])
        for i, (objid, cls) in enumerate(chosen):
            with Image.open(SHARED / "galaxies" / "gz1" / "images" / f"{objid}.jpeg") as image:
                image.convert("RGB").resize((SIZE, SIZE), Image.Resampling.LANCZOS).save(
                    out / "images" / f"{objid}.jpeg", quality=QUALITY, optimize=True
                )
            # Class 4 ("don't know") has no expert answer: never gold.
            is_gold = i in gold and cls != 4
            writer.writerow([
                objid, f"{objid}.jpeg", T0_OF_CLASS[cls] if is_gold else "",
                T1_OF_CLASS[cls] if is_gold and cls in T1_OF_CLASS else "", cls, *truth_cells(cls), "SDSS DR7",
            ])


def build_skills() -> None:
    """Per real worker of the dog crowd (4 classes, at least 20 answers on questions with truth): the
    counts of answers per true class (rows) and answer (columns)."""
    with open(SHARED / "crowds" / "dog" / "truth.csv", encoding="utf-8") as handle:
        truth = {r["question"]: int(r["truth"]) for r in csv.DictReader(handle)}
    counts: dict[str, list[list[int]]] = defaultdict(lambda: [[0] * 4 for _ in range(4)])
    with open(SHARED / "crowds" / "dog" / "answers.csv", encoding="utf-8") as handle:
        for r in csv.DictReader(handle):
            if r["question"] in truth:
                counts[r["worker"]][truth[r["question"]]][int(r["answer"])] += 1
    workers = [c for _, c in sorted(counts.items(), key=lambda kv: int(kv[0])) if sum(map(sum, c)) >= 20]
    document = {
        "source": "crowds/dog of the Zheng et al. (PVLDB 2017) truth-inference benchmark: 807 dog images, "
        "4 breeds, 109 workers (Zhou et al. 2012)",
        "meaning": "counts[w][true class][answer] of real worker w (workers with >= 20 answers on questions with truth)",
        "counts": workers,
    }
    (HERE / "crowd_skills.json").write_text(json.dumps(document, separators=(",", ":")) + "\n", encoding="utf-8")


def build_shares(rng: random.Random) -> None:
    """Real DECaLS subjects' share of smooth-or-featured votes for their majority answer."""
    rows = []
    with open(SHARED / "zooniverse" / "gz_decals_smooth_featured_votes.csv", encoding="utf-8") as handle:
        for r in csv.DictReader(handle):
            smooth, featured = float(r["smooth"]), float(r["featured_or_disk"])
            if smooth + featured < 5 or smooth == featured:
                continue
            majority = "smooth" if smooth > featured else "featured"
            rows.append((majority, round((max(smooth, featured) + 0.5) / (smooth + featured + 1), 4)))
    with open(HERE / "vote_shares.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["majority", "share"])
        writer.writerows(rng.sample(rows, N_SHARES))


if __name__ == "__main__":
    build_galaxies(random.Random(SEED))
    build_skills()
    build_shares(random.Random(SEED + 1))
