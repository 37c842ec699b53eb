"""The gold gate: the machine's retirement rule, that rule replayed on the gold subjects, and the
"trained" criterion that decides whether a version may retire anything.

- The rule (``sure_enough``): a prediction may ask to retire its subject only if the mean of its
  probabilities and those of the versions promoted before it (``retirement_versions`` in all)
  gives its answer at least ``machine_threshold``. Why not this version alone: every promotion
  re-predicts every unretired subject, so a subject whose probability wavers about the threshold
  is retired by whichever version happens to rise above it.
- "Trained" (GZX's criterion, ``trained_criterion``): gold accuracy >= ``min_gold_accuracy`` on >=
  ``min_gold_subjects`` gold subjects, for this version and its ancestors (``stable_versions`` in
  all), with none more than ``stability_tolerance`` below an older one of them; and, because
  machine retirement acts only where the CNN is sure, accuracy >= ``min_retire_accuracy`` on the
  gold subjects its line would have retired so far, by the rule above, replayed on the gold
  subjects version by version (``replay_on_gold``), at least ``min_gold_subjects`` of them. The
  overall accuracy alone is the wrong bar: a CNN can be mediocre on average and nearly always right
  on the share it is sure of, or the reverse.
- Hysteresis (``record_passes``): once a version is trained its successors stay so unless the
  record shows, with probability ``retire_stop_confidence``, that the line retires less accurately
  than the bar: the record rests on a few hundred gold subjects and moves by a point with one or
  two of them, so the point estimate against the bar would stop a good machine on noise.
- Per answer (``retire_record`` "per_answer", not the default; ``certified_answers``): the record
  and the bar are per answer retired with, and the machine retires only with the answers that pass.
  The overall record is mostly the common answer's, and can hide a rarer answer retired far less
  accurately.

- Per question: a version is judged question by question (``trained_criterion(version, cfg,
  key)``), each on the gold subjects of that question, with that question's thresholds
  (``machine.config.question_settings``) and that question's standing in its ancestors; its answers
  to a question count, and may retire, only once it is trained on that question
  (``trusted_questions``). A version is "trained" if it is on any question.

What each of these measured, and why "per_answer" is not the default: docs/machine.md, steps 7
and 11.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from scipy.stats import beta as beta_distribution

from machine.models import ModelVersion
from machine.selectors import ancestors


def sure_enough(probs: np.ndarray, earlier: Sequence[Sequence[float] | None], threshold: float) -> bool:
    """Whether the machine may retire a subject: the mean of this version's probabilities and the
    earlier versions' (all of them known) gives this version's answer at least ``threshold``."""
    if any(p is None or len(p) != len(probs) for p in earlier):
        return False
    mean = np.mean([np.asarray(probs, dtype=float), *(np.asarray(p, dtype=float) for p in earlier)], axis=0)
    return int(mean.argmax()) == int(np.argmax(probs)) and float(mean.max()) >= threshold


def replay_on_gold(
    ids: Sequence[int], probs: np.ndarray, line: Sequence[tuple[Mapping[str, Sequence[float]], bool]], cfg: dict,
) -> tuple[np.ndarray, np.ndarray]:
    """The machine's retirements replayed on the gold subjects, as if they were ordinary ones.

    Returns (``now``: the gold subjects this version would retire by the machine's rule, its mean
    with the ``retirement_versions - 1`` versions before it; ``answers``: for every gold subject the
    answer it would have been retired with by this version or a trained one of its ``line``, the
    first whose rule fired, or -1). Why both: every promotion re-predicts every unretired subject,
    so a subject the first versions were unsure of gets a new chance at each; the easy ones retire
    at the first pass and what crosses the threshold later is the wavering rest, retired less
    accurately than any one version's gold record says (docs/machine.md, step 7). The gold subjects
    are never retired, so every version predicts them: replaying the line on them measures what the
    machine has retired in all, and that is what ``min_retire_accuracy`` bars."""
    answers = replay_line(ids, line, cfg)
    # This version: with fewer ancestors than the rule averages (the first ones, which retire
    # nothing yet) it is measured with those it has; that is what can make it "trained".
    earlier = [predictions for predictions, _ in line[max(0, len(line) - (cfg["retirement_versions"] - 1)):]][::-1]
    threshold = cfg["machine_threshold"]
    now = np.array([sure_enough(p, [e.get(str(i)) for e in earlier], threshold) for i, p in zip(ids, probs, strict=True)], dtype=bool)
    first_now = now & (answers < 0)
    answers[first_now] = np.asarray(probs).argmax(axis=1)[first_now]
    return now, answers


def replay_line(ids: Sequence[int], line: Sequence[tuple[Mapping[str, Sequence[float]], bool]], cfg: dict) -> np.ndarray:
    """For every gold subject, the answer the first trained version of ``line`` (oldest first) whose
    machine rule fired would have retired it with, or -1: ``replay_on_gold`` without the version
    being measured."""
    n_earlier, threshold = cfg["retirement_versions"] - 1, cfg["machine_threshold"]
    history = [predictions for predictions, _ in line]
    answers = np.full(len(ids), -1, dtype=np.int64)
    for t, (predictions, trained) in enumerate(line):
        earlier = history[max(0, t - n_earlier):t][::-1]
        if not trained or len(earlier) < n_earlier:  # it retired nothing (predict_unretired)
            continue
        for j, subject_id in enumerate(ids):
            p = predictions.get(str(subject_id))
            if answers[j] < 0 and p is not None and sure_enough(p, [e.get(str(subject_id)) for e in earlier], threshold):
                answers[j] = int(np.argmax(p))
    return answers


def trusted_questions(version: ModelVersion, heads: Sequence[tuple[str, int]]) -> list[str]:
    """The questions of ``heads`` whose answers by ``version`` count: those it is trained on."""
    return [key for key, _ in heads if version.trusted_on(key)]


def trained_criterion(version: ModelVersion, cfg: dict, key: str | None = None) -> tuple[bool, str]:
    """GZX's "trained": good enough on gold, and stable across the last versions; on question ``key``
    (its metrics, its ancestors' on it; ``None``: the top-level metrics, the first question's)."""
    metrics = version.question_metrics(key)
    n_gold = metrics.get("n_gold_test") or 0
    if n_gold < cfg["min_gold_subjects"]:
        return False, f"{n_gold} gold subjects, {cfg['min_gold_subjects']} needed"
    chain = [version, *ancestors(version, cfg["stable_versions"] - 1)]
    if len(chain) < cfg["stable_versions"]:
        return False, f"{len(chain)} version(s) so far, {cfg['stable_versions']} needed for stability"
    accuracies = [v.question_metrics(key).get("accuracy") for v in chain]
    if any(a is None or a < cfg["min_gold_accuracy"] for a in accuracies):
        return False, f"gold accuracies {accuracies} not all >= {cfg['min_gold_accuracy']}"
    # Stable = no version fell more than the tolerance below an older one of the chain. A rise is not
    # instability: judged both ways, a weak trained version blocked every better successor (they
    # were "unstable" against it, so untrained, so never promoted over a trained one).
    drops = [older - newer for i, newer in enumerate(accuracies) for older in accuracies[i + 1:]]
    if max(drops, default=0.0) > cfg["stability_tolerance"]:
        return False, f"gold accuracies {accuracies} (newest first) fell by more than {cfg['stability_tolerance']}"
    # What the machine retires must be proven right on gold, not only its average answer: a CNN
    # with one overall accuracy can be nearly always right where it is sure, or far less. Measured
    # by the rule it retires by, on every gold subject (out of fold), over everything its line would
    # have retired so far (``replay_on_gold``): each version checked alone, above the threshold, on
    # half the gold let through versions whose retirements were wrong far more often than the bar.
    per_answer = certified_answers(version, cfg, key)
    if per_answer is not None:
        answers, records = per_answer
        summary = f"gold accuracies {accuracies} >= {cfg['min_gold_accuracy']} and stable; " if answers else ""
        return bool(answers), summary + "; ".join(records)
    n_retired, accuracy = metrics.get("n_retired_gold") or 0, metrics.get("retired_gold_accuracy")
    if n_retired < cfg["min_gold_subjects"]:
        return False, (f"{n_retired} gold subjects its line would have retired ({cfg['retirement_versions']} version(s)' mean >= "
                       f"{cfg['machine_threshold']}), {cfg['min_gold_subjects']} needed")
    if accuracy is None:
        return False, f"no accuracy on the {n_retired} gold subjects its line would have retired"
    right = round(accuracy * n_retired)
    record = f"{right} of the {n_retired} gold subjects its line would have retired right ({accuracy:.3f})"
    retiring = version.parent is not None and version.parent.trusted_on(key)
    trained, test = record_passes(right, n_retired, retiring, cfg)
    if retiring:
        test += " (the line was trained)"
    if not trained:
        return False, f"{record}: {test}"
    return True, f"gold accuracies {accuracies} >= {cfg['min_gold_accuracy']} and stable; {record}: {test}"


def record_passes(right: int, n: int, retiring: bool, cfg: dict) -> tuple[bool, str]:
    """Whether a gold record of ``right`` of ``n`` lets the machine retire, and the test in words.

    Hysteresis (see the module docstring): a line starts retiring when its record reaches
    ``min_retire_accuracy`` and, once ``retiring``, stops only when the record shows with
    ``retire_stop_confidence`` (Beta posterior, uniform prior) that it is below."""
    bar, confidence = cfg["min_retire_accuracy"], cfg["retire_stop_confidence"]
    if retiring:
        below = float(beta_distribution.cdf(bar, right + 1, n - right + 1))
        passed = below <= confidence
        return passed, f"below {bar} with probability {below:.2f} {'<=' if passed else '>'} {confidence}"
    passed = right / n >= bar
    return passed, f"{'>=' if passed else '<'} {bar}"


def certified_answers(version: ModelVersion, cfg: dict, key: str | None = None) -> tuple[list[int], list[str]] | None:
    """The answers the machine may retire with, and each answer's record; ``None`` where records per
    answer do not apply (``retire_record`` "overall", or a version measured without them).

    An answer is certified as the whole line is in ``trained_criterion``, on the gold subjects the
    line would have retired *with that answer* (``retired_gold_by_answer``): at least
    ``min_gold_subjects`` of them, and right on ``min_retire_accuracy`` of them to start; once the
    parent retired with it, until the record shows with ``retire_stop_confidence`` that it is below.
    Why per answer: the overall record is mostly the common answer's, and the CNN's minority answer
    near the threshold can be wrong far more often than its calibrated probability says, on too few
    gold subjects of that answer to show it to the calibration (docs/machine.md, step 7)."""
    by_answer = version.question_metrics(key).get("retired_gold_by_answer")
    if cfg["retire_record"] != "per_answer" or by_answer is None:
        return None
    parent = version.parent
    parent_answers: list[int] | None = []
    if parent is not None and parent.trusted_on(key):
        parent_answers = parent.retire_answers if key is None else parent.retire_answers_on(key)
    answers, records = [], []
    for answer, (n, right) in enumerate(by_answer):
        record = f"answer {answer}: {right} of {n} right"
        if n < cfg["min_gold_subjects"]:
            records.append(f"{record}, {cfg['min_gold_subjects']} needed")
            continue
        retiring = parent_answers is None or answer in parent_answers
        certified, test = record_passes(right, n, retiring, cfg)
        records.append(f"{record}, {test} (the line retired with it)" if retiring else f"{record} ({right / n:.3f} {test})")
        if certified:
            answers.append(answer)
    return answers, records
