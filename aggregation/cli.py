"""Command line of the engine: ``python -m aggregation replay ...``.

``replay-boxes`` belongs to the box engine and is delegated to ``aggregation.box_cli``.

Bad input exits with status 2 and ``error: file:line: message`` on stderr, never a silent
figure: an answers or truth file with no rows, a malformed row, an answer not below
``--classes``, a truth label outside the answers' classes, a question with two different
truths, truth of which no question is in the answers. Truth questions that are not in the
answers are left out of the accuracy with a warning giving their count and a few of them
(and ``n_truth_unknown`` in ``--json``).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence

import numpy as np

from .defaults import HALF_TRUST
from .io import AnswerTable, CsvError, TruthTable, read_answers, read_truth_table
from .replay import DEFAULT_ONLINE_POLICY, examples, match_truth, replay
from .retirement import POLICY_SYNTAX, PosteriorAbove, RetirementPolicy, parse_policy


def _int_at_least(low: int) -> Callable[[str], int]:
    """An argparse type: an integer no smaller than ``low``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{value} is below {low}")
        return value

    return parse


def _replay_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m aggregation replay",
        description="Replay a question,worker,answer CSV through the consensus engine.",
        epilog=POLICY_SYNTAX,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--answers", required=True, help="CSV with question,worker,answer")
    parser.add_argument("--truth", help="CSV with question,truth, to measure accuracy")
    parser.add_argument("--online", action="store_true",
                        help="stream answers in order and stop feeding retired subjects")
    parser.add_argument("--policy", default=None,
                        help=f"retirement policy for --online (default {DEFAULT_ONLINE_POLICY!r})")
    parser.add_argument("--classes", type=_int_at_least(2), default=None,
                        help="number of answers (default: largest answer + 1, at least 2)")
    parser.add_argument("--refit-every", type=_int_at_least(0), default=250,
                        help="online: batch EM refit every N answers (0: never)")
    parser.add_argument("--chunk-size", type=_int_at_least(1), default=None,
                        help="online: vectorised replay in chunks of N answers "
                             "(default: exact, one answer at a time)")
    parser.add_argument("--shuffle", type=_int_at_least(0), default=None, metavar="SEED",
                        help="online: shuffle the arrival order with this seed")
    parser.add_argument("--half-trust", type=_non_negative, default=HALF_TRUST, metavar="N",
                        help="answers' worth of evidence of a worker's skill before its answers are "
                             f"trusted half (default {HALF_TRUST:g}; 0: every worker trusted from its "
                             "first answer, the engine before issue 25; see aggregation/defaults.py)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    return parser


def _non_negative(text: str) -> float:
    """An argparse type: a finite number, 0 or more."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text} is not a finite number, 0 or more")
    return value


def _check_classes(table: AnswerTable, classes: int | None) -> int:
    """The number of classes; raises ``CsvError`` at the first answer not below ``--classes``."""
    top = int(table.answers.max())
    if classes is None:
        return max(top + 1, 2)
    if top >= classes:
        at = int(np.flatnonzero(table.answers >= classes)[0])
        line = int(table.lines[at]) if table.lines is not None else None
        over = int((table.answers >= classes).sum())
        raise CsvError(str(table.path or "answers"), [(line, (
            f"answer {table.answers[at]} is not below --classes {classes} "
            f"({over} answer(s) are; the largest is {top})"))])
    return classes


def _check_truth_labels(truth: TruthTable, k: int, classes: int | None) -> None:
    """Raises ``CsvError`` naming every truth line whose label is not one of the k classes."""
    why = (f"the classes 0..{k - 1} of --classes {classes}" if classes is not None
           else f"the answers' classes 0..{k - 1} (pass --classes to allow more)")
    problems: list[tuple[int | None, str]] = [
        (truth.lines.get(q), f"truth {t} for question {q!r} is outside {why}")
        for q, t in truth.labels.items() if t >= k]
    if problems:
        raise CsvError(str(truth.path or "truth"), problems)


def _check_policy(policy: RetirementPolicy | None, k: int) -> str | None:
    """A message when a rule names an answer that is not one of the k classes, else None."""
    for rule in policy.rules if policy is not None else ():
        if isinstance(rule, PosteriorAbove) and rule.answer is not None and rule.answer >= k:
            return (f"posterior[{rule.answer}] names answer {rule.answer} but the classes are "
                    f"0..{k - 1}; it could never fire")
    return None


def replay_main(argv: Sequence[str]) -> int:
    """Entry point of ``replay``; returns the exit status (2 for bad input)."""
    args = _replay_parser().parse_args(list(argv))
    try:
        policy = parse_policy(args.policy) if args.policy is not None else None
    except ValueError as exc:
        print(f"error: --policy: {exc}", file=sys.stderr)
        return 2
    try:
        table = read_answers(args.answers)
        truth = read_truth_table(args.truth) if args.truth else None
        k = _check_classes(table, args.classes)
        if truth is not None:
            _check_truth_labels(truth, k, args.classes)
    except CsvError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    problem = _check_policy(policy if args.online else None, k)
    if problem:
        print(f"error: --policy: {problem}", file=sys.stderr)
        return 2
    if truth is not None:
        match = match_truth(table.subjects, truth.labels)
        n, unknown = match.n_truth, match.unknown
        if not match.scored:
            print(f"error: {args.truth}: none of its {n} question(s) are in the answers "
                  f"{args.answers} (e.g. {examples(unknown)}); no accuracy to measure",
                  file=sys.stderr)
            return 2
        if unknown:
            print(f"warning: {args.truth}: {len(unknown)} of {n} questions are not in the "
                  f"answers (e.g. {examples(unknown)}); accuracy is over the other "
                  f"{n - len(unknown)}", file=sys.stderr)
    result, _ = replay(table, truth.labels if truth is not None else None, n_classes=k,
                       online=args.online, policy=policy, refit_every=args.refit_every,
                       chunk_size=args.chunk_size, order_seed=args.shuffle,
                       estimator_options={"half_trust": args.half_trust})
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
        return 0
    lines = [f"mode: {result.mode}" + (f" (policy {result.policy})" if result.policy else "")]
    if result.accuracy is not None:
        left_out = (f" ({result.n_truth_unknown} of {result.n_truth} with truth not in the "
                    "answers, left out)" if result.n_truth_unknown else "")
        lines.append(f"accuracy: {result.accuracy:.4f} on {result.n_truth_scored} subjects "
                     f"with truth{left_out}")
        if result.mode == "online":
            lines.append(f"accuracy after the last refit: {result.accuracy_after_refit:.4f}")
    lines.append(f"answers consumed: {result.answers_consumed} of {result.n_answers} "
                 f"({100 * result.fraction_consumed:.1f}%), saved {result.answers_saved}")
    reasons = ", ".join(f"{r} {n}" for r, n in sorted(result.retirement_reasons.items()))
    lines.append(f"subjects retired: {result.subjects_retired} of {result.n_subjects}"
                 + (f" ({reasons})" if reasons else ""))
    lines.append(f"time: {result.seconds:.3f} s ({result.answers_per_second:,.0f} answers/s)")
    print("\n".join(lines))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = "replay, replay-boxes"
    if not argv or argv[0] in ("-h", "--help"):
        print(f"usage: python -m aggregation {{{commands}}} ...", file=sys.stderr)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == "replay":
        return replay_main(rest)
    if command == "replay-boxes":
        from . import box_cli  # written by the box engine; imported only when asked for

        return int(box_cli.main(rest))
    print(f"error: unknown command {command!r}; expected one of {commands}", file=sys.stderr)
    return 2
