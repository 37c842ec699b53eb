"""``python -m aggregation replay-boxes``: replay a box log through the box engine and score it.

Reads ``image,worker,x,y,width,height`` (a row with empty box fields: the worker saw the image
and drew nothing) and, optionally, gold boxes ``image,x,y,width,height``. Offline, the whole log
goes through ``BoxEngine.fit``; with ``--online`` the classifications arrive one at a time in file
order, and an image that has retired takes no more workers. Prints precision, recall and F1 at
IoU >= 0.5 against the gold images, the workers used per image, and the time taken. By default
skills are learned from consensus only and the gold boxes are used for scoring, never for
learning; ``--gold-split`` splits the gold images in two halves, shows one half to the engine as
gold subjects and scores the other, both ways round (no image is scored by an engine that saw
its gold boxes).

Bad input exits with status 2 and ``error: file:line: message``, never a silent figure: a crowd
or gold file with no rows (``file: no answers``, ``file: no gold images``), a malformed row, a
gold image given both boxes and an empty row, the same gold box twice, gold of which no image
is in the crowd file. Gold images absent from the crowd file are left out of the scores with a
warning giving their count and a few of them (``gold_images_unknown`` in ``--json``).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

from aggregation.boxes import Box, BoxEngine, BoxPriors, Score, default_policy, score
from aggregation.io import first_undecodable_line
from aggregation.replay import UNKNOWN_EXAMPLES, examples
from aggregation.retirement import parse_policy

BOX_FIELDS = ("x", "y", "width", "height")


class InputError(ValueError):
    """A malformed input file; the message names the file and line."""


@dataclass(frozen=True)
class Classification:
    """One worker's boxes on one image (an empty tuple: they drew nothing)."""

    image: str
    worker: str
    boxes: tuple[Box, ...]
    line: int


def _parse_box(row: dict, path: str, line: int) -> Box | None:
    raw = [(row.get(k) or "").strip() for k in BOX_FIELDS]
    if all(v == "" for v in raw):
        return None
    if any(v == "" for v in raw):
        missing = [k for k, v in zip(BOX_FIELDS, raw, strict=True) if v == ""]
        raise InputError(f"{path}:{line}: box fields partly empty (missing {', '.join(missing)})")
    vals = []
    for k, v in zip(BOX_FIELDS, raw, strict=True):
        try:
            f = float(v)
        except ValueError:
            raise InputError(f"{path}:{line}: {k} is not a number: {v!r}") from None
        if not math.isfinite(f):
            raise InputError(f"{path}:{line}: {k} is not finite: {v!r}")
        vals.append(f)
    if vals[2] < 0 or vals[3] < 0:
        raise InputError(f"{path}:{line}: width and height must not be negative")
    return (vals[0], vals[1], vals[2], vals[3])


def _rows(path: str, required: Sequence[str], what: str) -> Iterator[tuple[int, dict]]:
    """(line number, row) for each non-blank data row, after checking the header.

    Raises ``InputError`` when the file cannot be read or decoded, its CSV is malformed, a
    required column is missing, a row has the wrong number of fields, or there is no header
    (``path: no WHAT: the file is empty or blank``).
    """
    try:
        handle = open(path, newline="", encoding="utf-8-sig")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror or exc}") from None
    with handle:
        reader = csv.reader(handle)
        header: list[str] | None = None
        try:
            for fields in reader:
                if not fields:  # a blank line
                    continue
                line = reader.line_num
                if header is None:
                    header = [h.strip() for h in fields]
                    missing = [c for c in required if c not in header]
                    if missing:
                        raise InputError(f"{path}:{line}: missing column(s) "
                                         f"{', '.join(missing)}; expected {','.join(required)}")
                    continue
                if len(fields) != len(header):
                    raise InputError(f"{path}:{line}: expected {len(header)} fields, "
                                     f"got {len(fields)}")
                yield line, dict(zip(header, fields, strict=True))
        except csv.Error as exc:
            raise InputError(f"{path}:{reader.line_num}: malformed CSV: {exc}") from None
        except UnicodeDecodeError:
            bad = first_undecodable_line(path)
            raise InputError(f"{path}{'' if bad is None else f':{bad}'}: not UTF-8 text") from None
        if header is None:
            raise InputError(f"{path}: no {what}: the file is empty or blank "
                             f"(expected a header {','.join(required)})")


def read_boxes(path: str, skipped: list[int] | None = None) -> list[Classification]:
    """Worker boxes grouped into classifications, in order of each (image, worker)'s first row.

    A box of zero width or height (a click, not a drag) is dropped; its line number is added
    to ``skipped``. The worker still counts as having seen the image. A file with no rows is
    an ``InputError`` (``path: no answers``).
    """
    groups: dict[tuple[str, str], list] = {}
    for line, row in _rows(path, ("image", "worker", *BOX_FIELDS), "answers"):
        image, worker = row["image"].strip(), row["worker"].strip()
        if not image or not worker:
            raise InputError(f"{path}:{line}: image and worker must not be empty")
        box = _parse_box(row, path, line)
        entry = groups.setdefault((image, worker), [line, []])
        if box is not None and (box[2] == 0 or box[3] == 0):
            if skipped is not None:
                skipped.append(line)
        elif box is not None:
            entry[1].append(box)
    if not groups:
        raise InputError(f"{path}: no answers: the file has a header and no rows")
    return [Classification(i, w, tuple(b), line) for (i, w), (line, b) in groups.items()]


def read_gold(path: str) -> dict[str, list[Box]]:
    """Gold boxes by image (an image whose only row is empty has no object).

    Raises ``InputError`` naming the line for a malformed row, a box of zero size, the same
    box twice on an image, and an image given both an empty row (no object) and boxes; and
    naming the file when it has no rows.
    """
    gold: dict[str, list[Box]] = {}
    first: dict[str, int] = {}  # image -> line of its first row
    empty: dict[str, int] = {}  # image -> line of its empty ("no object") row
    seen: dict[tuple[str, Box], int] = {}  # (image, box) -> line
    for line, row in _rows(path, ("image", *BOX_FIELDS), "gold images"):
        image = row["image"].strip()
        if not image:
            raise InputError(f"{path}:{line}: image must not be empty")
        box = _parse_box(row, path, line)
        gold.setdefault(image, [])
        first.setdefault(image, line)
        if box is None:
            if gold[image]:
                raise InputError(f"{path}:{line}: image {image!r} has boxes (line "
                                 f"{first[image]}) and an empty row saying it has none")
            empty.setdefault(image, line)
            continue
        if box[2] == 0 or box[3] == 0:
            raise InputError(f"{path}:{line}: a gold box must have positive width and height")
        if image in empty:
            raise InputError(f"{path}:{line}: image {image!r} has an empty row saying it has "
                             f"no boxes (line {empty[image]}) and a box")
        if (image, box) in seen:
            raise InputError(f"{path}:{line}: the same gold box as line {seen[image, box]}")
        seen[image, box] = line
        gold[image].append(box)
    if not gold:
        raise InputError(f"{path}: no gold images: the file has a header and no rows")
    return gold


def replay(classifications: Sequence[Classification], *, online: bool, engine: BoxEngine,
           gold_subjects: Mapping[str, list[Box]] | None = None,
           ) -> tuple[BoxEngine, dict[str, int]]:
    """Run the log through ``engine``; return it and the workers used per image.

    ``gold_subjects`` are shown to the engine as gold (true boxes known): their volunteers are
    credited against the truth, and a retirement policy never retires them.
    """
    gold_subjects = gold_subjects or {}
    used: dict[str, int] = {}
    if online:
        for c in classifications:
            used.setdefault(c.image, 0)
            if engine.retired(c.image) is not None:
                continue
            engine.add_classification(c.image, c.worker, c.boxes,
                                      gold=gold_subjects.get(c.image))
            used[c.image] += 1
    else:
        engine.fit(((c.image, c.worker, c.boxes) for c in classifications), gold=gold_subjects)
        for c in classifications:
            used[c.image] = used.get(c.image, 0) + 1
    return engine, used


def _positive_float(text: str) -> float:
    """An argparse type: a finite number above 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a finite number above 0")
    return value


def _iou(text: str) -> float:
    """An argparse type: an IoU threshold in (0, 1]."""
    value = _positive_float(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at most 1")
    return value




def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m aggregation replay-boxes",
        description="Replay crowd boxes through the box engine and score them against gold.")
    p.add_argument("--boxes", required=True, help="CSV image,worker,x,y,width,height")
    p.add_argument("--gold", help="CSV image,x,y,width,height of expert boxes")
    p.add_argument("--online", action="store_true",
                   help="one worker at a time per image; retired images take no more workers")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--risk", type=_positive_float, default=0.02,
                   help="retire when the expected number of errors falls below this "
                        "(default 0.02)")
    p.add_argument("--policy", help="retirement policy string (overrides --risk), e.g. "
                                    "'risk:0.02,max:20'")
    p.add_argument("--iou", type=_iou, default=0.5,
                   help="IoU for a match when scoring, in (0, 1] (default 0.5)")
    p.add_argument("--gold-split", action="store_true",
                   help="also learn skills from gold: split the gold images in two halves, "
                        "learn from one and score the other, both ways round")
    return p


def main(argv: list[str]) -> int:
    """Entry point of ``replay-boxes``; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        policy = parse_policy(args.policy) if args.policy else default_policy(args.risk)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.gold_split and not args.gold:
        print("error: --gold-split needs --gold", file=sys.stderr)
        return 2
    try:
        skipped: list[int] = []
        classifications = read_boxes(args.boxes, skipped)
        gold = read_gold(args.gold) if args.gold else None
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    # Gold images nobody in the crowd file saw are not scored (they are not counted as missed).
    gold_read = len(gold) if gold is not None else 0
    unknown_gold: list[str] = []
    if gold is not None:
        crowd_images = {c.image for c in classifications}
        unknown_gold = [i for i in gold if i not in crowd_images]
        if len(unknown_gold) == gold_read:
            print(f"error: {args.gold}: none of its {gold_read} image(s) are in the crowd file "
                  f"{args.boxes} (e.g. {examples(unknown_gold)}); nothing to score",
                  file=sys.stderr)
            return 2
        if unknown_gold:
            print(f"warning: {args.gold}: {len(unknown_gold)} of {gold_read} images are not in "
                  f"the crowd file (e.g. {examples(unknown_gold)}); scores are over the other "
                  f"{gold_read - len(unknown_gold)}", file=sys.stderr)
            gold = {i: b for i, b in gold.items() if i in crowd_images}
    # Each run: (gold images the engine may learn from, gold images it is scored on).
    if args.gold_split and gold is not None:
        images = sorted(gold)
        halves = (set(images[0::2]), set(images[1::2]))
        runs = [(halves[0], halves[1]), (halves[1], halves[0])]
    else:
        runs = [(set(), set(gold or ()))]
    tp = fp = fn = 0
    elapsed = 0.0
    per_run_workers, per_run_gold_workers, used_total, scored = [], [], 0, 0
    retired = 0
    engine = BoxEngine(BoxPriors(), policy)
    used: dict[str, int] = {}
    for train, test in runs:
        engine = BoxEngine(BoxPriors(), policy)
        start = time.perf_counter()
        engine, used = replay(classifications, online=args.online, engine=engine,
                              gold_subjects={i: gold[i] for i in train} if gold else None)
        elapsed += time.perf_counter() - start
        counted = [i for i in used if i not in train]
        per_run_workers.append(sum(used[i] for i in counted) / max(len(counted), 1))
        used_total += sum(used.values())
        retired += sum(1 for i in counted if engine.retired(i) is not None)
        if gold is not None:
            known = {i: gold[i] for i in test if i in used}
            pred = engine.predict(known)
            sc = score({i: [o.box for o in objs] for i, objs in pred.items()}, known, args.iou)
            tp, fp, fn = tp + sc.tp, fp + sc.fp, fn + sc.fn
            scored += len(known)
            per_run_gold_workers.append(sum(used[i] for i in known) / max(len(known), 1))
    n_runs = len(runs)
    report: dict = {
        "mode": "online" if args.online else "offline",
        "skills_from": "consensus + gold of the other half" if args.gold_split else "consensus",
        "policy": str(policy) if args.online else None,
        "images": len(used),
        "classifications_read": len(classifications),
        "classifications_used": used_total / n_runs,
        "workers_per_image": sum(per_run_workers) / n_runs,
        "seconds": elapsed,
        # Classifications actually aggregated (an online replay skips retired images).
        "classifications_per_second": used_total / elapsed if elapsed else None,
        "boxes_read": sum(len(c.boxes) for c in classifications),
        "degenerate_boxes_skipped": len(skipped),
        "learned": engine.describe(),
    }
    if args.gold_split:
        report["gold_images_learned_from_per_run"] = len(runs[0][0])
    if args.online:
        report["retired"] = retired / n_runs
    if gold is not None:
        sc = Score(tp, fp, fn)
        report.update({
            "gold_images": gold_read, "gold_images_unknown": len(unknown_gold),
            "gold_images_unknown_examples": unknown_gold[:UNKNOWN_EXAMPLES],
            "gold_images_scored": scored, "precision": sc.precision, "recall": sc.recall,
            "f1": sc.f1, "tp": tp, "fp": fp, "fn": fn,
            "workers_per_gold_image": sum(per_run_gold_workers) / n_runs,
        })
    if args.json:
        print(json.dumps(report, indent=2, sort_keys=True))
        return 0
    print(f"mode: {report['mode']}  skills from: {report['skills_from']}"
          + (f"  policy: {report['policy']}" if args.online else ""))
    print(f"images: {report['images']}  classifications used: "
          f"{report['classifications_used']:.0f} of {report['classifications_read']}")
    note = " (excluding gold images learned from)" if args.gold_split else ""
    print(f"workers per image: {report['workers_per_image']:.2f}{note}")
    if skipped:
        print(f"zero-size boxes skipped: {len(skipped)} (first at line {skipped[0]})")
    if gold is not None:
        left_out = (f" ({len(unknown_gold)} of {gold_read} gold images not in the crowd file, "
                    "left out)" if unknown_gold else "")
        print(f"gold images scored: {report['gold_images_scored']}{left_out}  workers per "
              f"scored image: {report['workers_per_gold_image']:.2f}")
        print(f"precision {report['precision']:.3f}  recall {report['recall']:.3f}  "
              f"F1 {report['f1']:.3f}  (IoU >= {args.iou})")
    rate = report["classifications_per_second"]
    print(f"time: {elapsed:.3f} s" + (f"  ({rate:.0f} classifications aggregated/s)"
                                      if rate is not None else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
