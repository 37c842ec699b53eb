"""Bounding-box aggregation with a learned skill for each volunteer (Lean Crowdsourcing style).

Many volunteers draw rectangles on a subject; this module turns them into objects, each with a
merged box, its uncertainty and the probability that it is real, and says when a subject's boxes
are certain enough to retire it. It follows the per-volunteer model of Branson, Van Horn and
Perona, "Lean Crowdsourcing" (CVPR 2017), as used by Galaxy Zoo: Clump Scout.

The model, for one subject seen by volunteers ``j``:

* Real objects are a Poisson process with ``mu`` objects per subject (learned); "distractors"
  (places that attract false boxes: artefacts, ambiguous blobs) are another with ``nu`` per
  subject (a fixed prior: see ``BoxPriors``).
* Volunteer ``j`` boxes each real object with probability ``1 - p_miss[j]`` and each distractor
  with probability ``p_false_positive[j]``, independently.
* A box on a real object is the true box plus Gaussian noise on its four edges, expressed in
  units of the object's width (x edges) and height (y edges): the variance of edge ``c`` is
  ``sigma[j]**2 * shape[c]``, where ``shape`` (mean 1) is one learned profile for all volunteers
  (people are sloppier about where a box ends than where it starts). Gold subjects also reveal
  the crowd's systematic offset from the truth on each edge (``edge_bias``), which is removed
  from reported boxes; from consensus alone it is invisible and stays zero.

Inference for a subject: each volunteer's boxes are matched to the subject's objects with the
Hungarian algorithm on the Mahalanobis distance, so no two boxes of one volunteer land on one
object; a box that fits no object within the gate opens a new candidate object, which absorbs it
as an explicit false positive unless others confirm it. A candidate's posterior log-odds of being
real is ``log(mu / nu)`` plus, for each volunteer who saw the subject, ``log((1 - p_miss) / p_fp)``
if they boxed it, else ``log(p_miss / (1 - p_fp))``. Its merged box is the precision-weighted mean
of its boxes (weights ``1 / sigma[j]**2``; with three or more boxes, one Student-t reweighting
step so that an outlying box weighs less) with variance ``1 / sum(weights)`` in the same units.

The expected risk of retiring the subject now is the expected number of errors in what would be
reported (objects with posterior >= 0.5): expected false objects + expected missed candidates +
expected real objects that no volunteer boxed yet (``mu * prod(p_miss)``) + expected reported
boxes off by more than IoU 0.5 from the truth (from the merged box's variance: the part of the
localisation error that more volunteers can still reduce). ``aggregation.retirement`` rules
decide from that risk (``SubjectSummary.expected_risk``), the same rules as for questions.

Skills are learned by expectation-maximisation: from consensus (soft counts weighted by the
posteriors) and from gold subjects (hard counts against the known boxes), each with a Beta or
scaled-inverse-chi-squared prior, so a new volunteer starts at the prior. Online, a subject
credits its volunteers once, when it retires; gold subjects credit each classification at once.
``BoxEngine.fit`` is the offline batch version (vectorised EM on a fixed matching, matched again
once with the learned skills). A detector is one more volunteer, with an id such as
``"machine:yolo-v8"``: it gets its own learned misses, false boxes and edge noise.

Boxes are ``(x, y, width, height)`` with ``(x, y)`` the top-left corner, in pixels.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment

from aggregation.retirement import (
    MaxClassifications,
    RetirementPolicy,
    RiskBelow,
    SubjectSummary,
    policy_from_dict,
)

Box = tuple[float, float, float, float]
"""A box as ``(x, y, width, height)``; ``(x, y)`` is the top-left corner."""

# Internal boxes are edges (x1, y1, x2, y2).
_Edges = tuple[float, float, float, float]

STATE_VERSION = 1
_EPS = 1e-9


@dataclass(frozen=True)
class BoxPriors:
    """Priors of the box model, each a mean and a strength in pseudo-observations.

    The defaults are vague and set on principle, not fitted to any data set: a volunteer
    misses one object in five (weight: five objects) and draws 0.2 false boxes per subject
    (weight: two subjects' worth of distractors); box edges are off by 10% of the object's size
    (weight: 8 boxes); a subject holds one real object (weight: one subject).

    ``distractors_per_subject`` is not learned. It says how many distinct places in a subject
    might draw a false box, hence how rarely false boxes of different volunteers coincide
    (volunteer ``j`` boxes a given distractor with probability ``false_boxes / distractors``).
    From crowd boxes alone a hard-to-see real object and a popular distractor look the same
    (a minority boxes both), so the model must be told; learning it lets EM explain every hard
    object away as a distractor.

    ``match_gate`` is the squared Mahalanobis distance (four edges) beyond which a box cannot
    join an object. Edge errors are heavy-tailed (a box that takes in a bicycle or a neighbour),
    so the edges are modelled as a Student t with ``robust_dof`` = 5 degrees of freedom: 45.6 is
    the 0.99 quantile of that distance (``4 * F(4, 5)`` at 0.99). The same t gives the
    reweighting step of the merge.
    ``loc_iou`` is the IoU below which a reported box counts as misplaced in the risk.
    ``bias_strength``: the weight (in boxes) of the prior "volunteers' edges are unbiased"
    against the systematic edge offsets that gold subjects reveal.
    """

    p_miss: float = 0.2
    p_miss_strength: float = 5.0
    false_boxes_per_subject: float = 0.2
    false_boxes_strength: float = 2.0
    sigma: float = 0.1
    sigma_strength: float = 8.0
    objects_per_subject: float = 1.0
    distractors_per_subject: float = 10.0
    rate_strength: float = 1.0
    shape_strength: float = 20.0
    bias_strength: float = 20.0
    match_gate: float = 45.6
    robust_dof: float = 5.0
    loc_iou: float = 0.5

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping) -> BoxPriors:
        return cls(**data)


@dataclass(frozen=True)
class BoxSkill:
    """A volunteer's box skill as posterior means (the prior blended with the evidence)."""

    p_miss: float
    p_false_positive: float
    """Probability of boxing a given distractor (a place holding no object)."""
    false_boxes_per_subject: float
    """Expected false boxes per subject seen: ``p_false_positive * distractors_per_subject``."""
    sigma: float
    """Edge noise in units of the object's size (scaled per edge by the shared shape)."""
    boxes: float
    """Expected number of the volunteer's boxes that were credited (real or false)."""


@dataclass(frozen=True)
class BoxObject:
    """One object of a subject: merged box, its standard error (pixels) and P(real)."""

    box: Box
    stderr: Box
    """Standard error of ``x, y, width, height`` in pixels."""
    p_real: float
    p_misplaced: float
    """Probability that the true box has IoU < ``loc_iou`` with ``box``, if it is real."""
    volunteers: tuple[str, ...]

    def to_dict(self) -> dict:
        return {"box": list(self.box), "stderr": list(self.stderr), "p_real": self.p_real,
                "p_misplaced": self.p_misplaced, "volunteers": list(self.volunteers)}


@dataclass(frozen=True)
class BoxResult:
    """What ``add_classification`` returns: the subject's objects and retirement decision."""

    subject: str
    objects: tuple[BoxObject, ...]
    """All candidate objects; ``reported`` are those with ``p_real >= 0.5``."""
    expected_risk: float
    n_counted: int
    retired: str | None
    """The retirement reason, or None while the subject is still active."""
    counted: bool
    """Whether this classification counted towards the subject's consensus."""
    credited: tuple[str, ...] = ()
    """Volunteers whose skill this call changed (their skill keys, and the engine-wide rates,
    are what a caller keeping state in separate keys must write back)."""

    @property
    def reported(self) -> tuple[BoxObject, ...]:
        return tuple(o for o in self.objects if o.p_real >= 0.5)

    def to_dict(self) -> dict:
        """JSON-safe form, e.g. for a Celery task's result."""
        return {"subject": self.subject, "objects": [o.to_dict() for o in self.objects],
                "expected_risk": self.expected_risk, "n_counted": self.n_counted,
                "retired": self.retired, "counted": self.counted,
                "credited": list(self.credited)}


# --- small geometry helpers ----------------------------------------------------------------

def _edges(box: Sequence[float]) -> _Edges:
    x, y, w, h = (float(v) for v in box)
    return (x, y, x + w, y + h)


def _xywh(edges: Sequence[float]) -> Box:
    x1, y1, x2, y2 = edges
    return (x1, y1, x2 - x1, y2 - y1)


def iou_matrix(a: Sequence[Box], b: Sequence[Box]) -> np.ndarray:
    """IoU of every box of ``a`` with every box of ``b`` (``(x, y, w, h)`` boxes)."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    aa = np.asarray(a, dtype=float).reshape(-1, 4)
    bb = np.asarray(b, dtype=float).reshape(-1, 4)
    ax2, ay2 = aa[:, 0] + aa[:, 2], aa[:, 1] + aa[:, 3]
    bx2, by2 = bb[:, 0] + bb[:, 2], bb[:, 1] + bb[:, 3]
    iw = np.minimum(ax2[:, None], bx2[None]) - np.maximum(aa[:, 0][:, None], bb[:, 0][None])
    ih = np.minimum(ay2[:, None], by2[None]) - np.maximum(aa[:, 1][:, None], bb[:, 1][None])
    inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
    union = (aa[:, 2] * aa[:, 3])[:, None] + (bb[:, 2] * bb[:, 3])[None] - inter
    return np.where(union > 0, inter / np.maximum(union, _EPS), 0.0)


def match_boxes(pred: Sequence[Box], truth: Sequence[Box], iou: float = 0.5) -> int:
    """Number of one-to-one matches with IoU >= ``iou`` (Hungarian on IoU)."""
    if len(pred) == 0 or len(truth) == 0:
        return 0
    m = iou_matrix(pred, truth)
    rows, cols = linear_sum_assignment(-m)
    return int((m[rows, cols] >= iou).sum())


def _misplaced_table(loc_iou: float, n: int = 10000) -> tuple[np.ndarray, np.ndarray]:
    """P(IoU < loc_iou) for a unit box whose four edges have i.i.d. N(0, s^2) errors.

    Monte Carlo with a fixed seed, computed once: deterministic on every run.
    """
    rng = np.random.default_rng(20170721)
    z = rng.standard_normal((n, 4))
    grid = np.concatenate([np.linspace(0.0, 0.5, 51), np.linspace(0.52, 2.0, 38)])
    probs = np.empty_like(grid)
    for i, s in enumerate(grid):
        e = z * s
        x1, y1, x2, y2 = e[:, 0], e[:, 1], 1 + e[:, 2], 1 + e[:, 3]
        iw = np.clip(np.minimum(x2, 1) - np.maximum(x1, 0), 0, None)
        ih = np.clip(np.minimum(y2, 1) - np.maximum(y1, 0), 0, None)
        inter = iw * ih
        area = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
        iou = inter / np.maximum(1 + area - inter, _EPS)
        probs[i] = float((iou < loc_iou).mean())
    return grid, np.maximum.accumulate(probs)


_TABLES: dict[float, tuple[list[float], list[float]]] = {}


def _misplaced(sd: float, loc_iou: float) -> float:
    table = _TABLES.get(loc_iou)
    if table is None:
        g, p = _misplaced_table(loc_iou)
        table = _TABLES[loc_iou] = (g.tolist(), p.tolist())
    grid, probs = table
    if sd >= grid[-1]:
        return probs[-1]
    # The grid is uniform (step 0.01) up to 0.5, then step 0.04.
    i = int(sd / 0.01) if sd < 0.5 else 50 + int((sd - 0.5) / 0.04)
    i = min(max(i, 0), len(grid) - 2)
    while grid[i + 1] < sd:
        i += 1
    t = (sd - grid[i]) / (grid[i + 1] - grid[i])
    return probs[i] + t * (probs[i + 1] - probs[i])


# --- volunteer skill ------------------------------------------------------------------------

_SKILL_KEYS = ("tp", "fp", "real_seen", "distractors_seen", "sq", "n_sq")


class _Skill:
    """Sufficient statistics of one volunteer (evidence only; the prior is added on read)."""

    __slots__ = (*_SKILL_KEYS, "_cache")

    def __init__(self, tp: float = 0.0, fp: float = 0.0, real_seen: float = 0.0,
                 distractors_seen: float = 0.0, sq: float = 0.0, n_sq: float = 0.0) -> None:
        self.tp, self.fp = tp, fp
        self.real_seen, self.distractors_seen = real_seen, distractors_seen
        self.sq, self.n_sq = sq, n_sq
        self._cache: tuple[float, float, float, float, float] | None = None

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in _SKILL_KEYS}

    @classmethod
    def from_dict(cls, data: Mapping) -> _Skill:
        return cls(**{k: float(data.get(k, 0.0)) for k in _SKILL_KEYS})

    def params(self, pr: BoxPriors) -> tuple[float, float, float, float, float]:
        """(p_miss, p_fp, sigma^2, log LR if boxed, log LR if not boxed), cached."""
        if self._cache is None:
            a = (1 - pr.p_miss) * pr.p_miss_strength
            detect = (self.tp + a) / (max(self.real_seen, self.tp) + pr.p_miss_strength)
            p_miss = min(max(1 - detect, 1e-4), 1 - 1e-4)
            n0 = pr.false_boxes_strength * pr.distractors_per_subject
            b = pr.false_boxes_per_subject * pr.false_boxes_strength
            p_fp = (self.fp + b) / (max(self.distractors_seen, self.fp) + n0)
            p_fp = min(max(p_fp, 1e-4), 1 - 1e-4)
            var = (self.sq + pr.sigma ** 2 * pr.sigma_strength) / (self.n_sq + pr.sigma_strength)
            self._cache = (p_miss, p_fp, var, math.log((1 - p_miss) / p_fp),
                           math.log(p_miss / (1 - p_fp)))
        return self._cache


# --- subject state --------------------------------------------------------------------------

class _Annotation:
    __slots__ = ("volunteer", "boxes", "edges", "counts", "objects")

    def __init__(self, volunteer: str, boxes: list[Box], counts: bool,
                 objects: list[int] | None = None) -> None:
        self.volunteer = volunteer
        self.boxes = boxes
        self.edges = [_edges(b) for b in boxes]
        self.counts = counts
        self.objects: list[int] = objects if objects is not None else [-1] * len(boxes)


class _Subject:
    __slots__ = ("annotations", "gold", "retired", "credited", "n_objects", "cache")

    def __init__(self) -> None:
        self.cache: tuple[int, list, dict] | None = None
        """(engine epoch, candidates, params): valid while no skill has changed."""
        self.annotations: list[_Annotation] = []
        self.gold: list[Box] | None = None
        self.retired: str | None = None
        self.credited = False
        self.n_objects = 0

    def to_dict(self) -> dict:
        return {
            "annotations": [
                {"volunteer": a.volunteer, "boxes": [list(b) for b in a.boxes],
                 "counts": a.counts, "objects": list(a.objects)}
                for a in self.annotations
            ],
            "gold": None if self.gold is None else [list(b) for b in self.gold],
            "retired": self.retired,
            "credited": self.credited,
        }

    @classmethod
    def from_dict(cls, data: Mapping) -> _Subject:
        s = cls()
        for a in data["annotations"]:
            s.annotations.append(_Annotation(
                str(a["volunteer"]), [tuple(float(v) for v in b) for b in a["boxes"]],
                bool(a["counts"]), [int(k) for k in a["objects"]]))
        s.gold = None if data.get("gold") is None else [
            tuple(float(v) for v in b) for b in data["gold"]]
        s.retired = data.get("retired")
        s.credited = bool(data.get("credited", False))
        s.n_objects = 1 + max((k for a in s.annotations for k in a.objects), default=-1)
        return s


class _Candidate:
    """A candidate object: its members and merged box under the skills of the moment."""

    __slots__ = ("oid", "members", "edges", "var", "log_odds", "p_real", "p_misplaced")

    def __init__(self, oid: int, members: list[tuple[int, int, _Edges, float]]) -> None:
        self.oid = oid
        self.members = members
        """(annotation index, box index, edges, volunteer's sigma^2) for each member box."""
        self.edges: _Edges = (0.0, 0.0, 0.0, 0.0)
        self.var = 0.0
        self.log_odds = 0.0
        self.p_real = 0.0
        self.p_misplaced = 0.0

    def merge(self, shape: Sequence[float], dof: float) -> None:
        """Precision-weighted mean of the member boxes (weights 1 / sigma_j^2) and its variance.

        With three or more boxes, one Student-t reweighting step (``dof`` degrees of freedom)
        lets a box far from the others weigh less; ``dof = 0`` turns that off.
        """
        sw = a0 = a1 = a2 = a3 = 0.0
        for _, _, z, v in self.members:
            w = 1.0 / v
            sw += w
            a0 += w * z[0]
            a1 += w * z[1]
            a2 += w * z[2]
            a3 += w * z[3]
        mean = (a0 / sw, a1 / sw, a2 / sw, a3 / sw)
        if len(self.members) > 2 and dof > 0:
            bw = max(mean[2] - mean[0], _EPS)
            bh = max(mean[3] - mean[1], _EPS)
            k0, k1, k2, k3 = shape
            sw = a0 = a1 = a2 = a3 = 0.0
            for _, _, z, v in self.members:
                d2 = (((z[0] - mean[0]) / bw) ** 2 / k0 + ((z[1] - mean[1]) / bh) ** 2 / k1
                      + ((z[2] - mean[2]) / bw) ** 2 / k2 + ((z[3] - mean[3]) / bh) ** 2 / k3) / v
                w = (dof + 4) / (dof + d2) / v
                sw += w
                a0 += w * z[0]
                a1 += w * z[1]
                a2 += w * z[2]
                a3 += w * z[3]
            mean = (a0 / sw, a1 / sw, a2 / sw, a3 / sw)
        self.edges = mean
        self.var = 1.0 / sw


def _sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


_Params = tuple[float, float, float, float, float]


# --- the engine ---------------------------------------------------------------------------

def default_policy(risk_threshold: float = 0.02, max_classifications: int = 20) -> RetirementPolicy:
    """Retire once the expected number of errors falls below ``risk_threshold``, or at a limit."""
    return RetirementPolicy([RiskBelow(risk_threshold), MaxClassifications(max_classifications)])


class BoxEngine:
    """Online and batch aggregation of volunteers' boxes with a skill for each volunteer.

    ``add_classification`` is the live path (one volunteer's boxes on one subject at a time);
    ``fit`` is the offline batch path (EM over a whole log). State splits into small JSON-safe
    dicts: one per volunteer (``skill_to_dict``), one per subject (``subject_to_dict``) and the
    engine-wide rates (``globals_to_dict``); ``to_dict``/``from_dict`` hold everything. Replaying
    the same log in the same order rebuilds the same state.
    """

    def __init__(self, priors: BoxPriors | None = None,
                 policy: RetirementPolicy | None = None, *, learn: bool = True) -> None:
        self.priors = priors or BoxPriors()
        self.policy = policy if policy is not None else default_policy()
        self.learn = learn
        self._skills: dict[str, _Skill] = {}
        self._subjects: dict[str, _Subject] = {}
        self._rates = {"subjects": 0.0, "objects": 0.0}
        self._shape = [0.0, 0.0, 0.0, 0.0]
        self._shape_n = 0.0
        self._bias = [0.0, 0.0, 0.0, 0.0]
        self._bias_n = 0.0
        self._params_cache: tuple[float, float, tuple[float, ...], float] | None = None
        self._epoch = 0

    # -- engine-wide parameters --

    def _globals(self) -> tuple[float, float, tuple[float, ...], float]:
        """(mu, nu, shape[4], mean sqrt(shape)), cached until the next credit."""
        if self._params_cache is None:
            pr = self.priors
            r = self._rates
            mu = (r["objects"] + pr.objects_per_subject * pr.rate_strength) / (
                r["subjects"] + pr.rate_strength)
            nu = pr.distractors_per_subject
            raw = [(s + pr.shape_strength) / (self._shape_n + pr.shape_strength)
                   for s in self._shape]
            mean = sum(raw) / 4
            shape = tuple(v / mean for v in raw)
            self._params_cache = (max(mu, 1e-3), max(nu, 1e-3), shape,
                                  sum(math.sqrt(v) for v in shape) / 4)
        return self._params_cache

    def _bias_vec(self) -> tuple[float, float, float, float]:
        """Systematic edge offset of volunteers' boxes from the truth (gold), in object sizes."""
        n = self._bias_n + self.priors.bias_strength
        b = self._bias
        return (b[0] / n, b[1] / n, b[2] / n, b[3] / n)

    def _skill(self, volunteer: str) -> _Skill:
        s = self._skills.get(volunteer)
        if s is None:
            s = self._skills[volunteer] = _Skill()
        return s

    def _params(self, sub: _Subject) -> dict[str, _Params]:
        pr = self.priors
        return {a.volunteer: self._skill(a.volunteer).params(pr) for a in sub.annotations}

    def skill(self, volunteer: str) -> BoxSkill:
        """The volunteer's current box skill (the prior for an unknown volunteer)."""
        s = self._skills.get(volunteer) or _Skill()
        p_miss, p_fp, var, _, _ = s.params(self.priors)
        return BoxSkill(p_miss=p_miss, p_false_positive=p_fp,
                        false_boxes_per_subject=p_fp * self.priors.distractors_per_subject,
                        sigma=math.sqrt(var), boxes=s.tp + s.fp)

    @property
    def volunteers(self) -> list[str]:
        return list(self._skills)

    def __contains__(self, subject: object) -> bool:
        """Whether anyone has drawn (or been shown) this subject with this engine."""
        return subject in self._subjects

    @property
    def subjects(self) -> list[str]:
        return list(self._subjects)

    # -- matching --

    def _build(self, sub: _Subject, params: Mapping[str, _Params],
               exclude: int = -1) -> list[_Candidate]:
        """The subject's candidate objects from its counted annotations, ordered by id."""
        groups: dict[int, list[tuple[int, int, _Edges, float]]] = {}
        for a_idx, ann in enumerate(sub.annotations):
            if not ann.counts or a_idx == exclude:
                continue
            var = params[ann.volunteer][2]
            for i, k in enumerate(ann.objects):
                if k >= 0:
                    groups.setdefault(k, []).append((a_idx, i, ann.edges[i], var))
        _, _, shape, _ = self._globals()
        dof = self.priors.robust_dof
        cands = []
        for k in sorted(groups):
            c = _Candidate(k, groups[k])
            c.merge(shape, dof)
            cands.append(c)
        return cands

    def _assign(self, sub: _Subject, a_idx: int, cands: list[_Candidate],
                params: Mapping[str, _Params]) -> None:
        """Match annotation ``a_idx``'s boxes to ``cands`` and update them in place.

        Hungarian assignment on the Mahalanobis distance between each box and each object's
        merged box, so one volunteer puts at most one box on an object; a box farther than the
        gate from every object opens a new one (a false positive unless others confirm it).
        """
        ann = sub.annotations[a_idx]
        if not ann.edges:
            return
        var_j = params[ann.volunteer][2]
        _, _, shape, _ = self._globals()
        k0, k1, k2, k3 = shape
        gate = self.priors.match_gate
        n, m = len(ann.edges), len(cands)
        pairs: list[tuple[int, int]] = []
        if m:
            cost = [[0.0] * m for _ in range(n)]
            for i, z in enumerate(ann.edges):
                row = cost[i]
                for k, c in enumerate(cands):
                    b = c.edges
                    sw = 0.5 * ((b[2] - b[0]) + (z[2] - z[0]))
                    sh = 0.5 * ((b[3] - b[1]) + (z[3] - z[1]))
                    sw = sw if sw > _EPS else _EPS
                    sh = sh if sh > _EPS else _EPS
                    d2 = (((z[0] - b[0]) / sw) ** 2 / k0 + ((z[1] - b[1]) / sh) ** 2 / k1
                          + ((z[2] - b[2]) / sw) ** 2 / k2
                          + ((z[3] - b[3]) / sh) ** 2 / k3) / (var_j + c.var)
                    if d2 < gate:
                        row[k] = d2 - gate
            if n == 1:
                row = cost[0]
                k = min(range(m), key=row.__getitem__)
                if row[k] < 0:
                    pairs.append((0, k))
            elif m == 1:
                i = min(range(n), key=lambda r: cost[r][0])
                if cost[i][0] < 0:
                    pairs.append((i, 0))
            else:
                arr = np.array(cost)
                rows, cols = linear_sum_assignment(arr)
                pairs = [(int(r), int(c)) for r, c in zip(rows, cols, strict=True)
                         if arr[r, c] < 0]
        matched = dict(pairs)
        dof = self.priors.robust_dof
        for i in range(n):
            member = (a_idx, i, ann.edges[i], var_j)
            k = matched.get(i)
            if k is None:
                c = _Candidate(sub.n_objects, [member])
                sub.n_objects += 1
                cands.append(c)
            else:
                c = cands[k]
                c.members.append(member)
            c.merge(shape, dof)
            ann.objects[i] = c.oid

    def _rematch(self, sub: _Subject, refine: bool = True) -> None:
        """Match every annotation again in order, then (``refine``) each against all others."""
        sub.cache = None
        for ann in sub.annotations:
            ann.objects = [-1] * len(ann.edges)
        sub.n_objects = 0
        params = self._params(sub)
        cands: list[_Candidate] = []
        for a_idx, ann in enumerate(sub.annotations):
            if ann.counts:
                self._assign(sub, a_idx, cands, params)
        if refine:
            for a_idx, ann in enumerate(sub.annotations):
                if ann.counts and ann.edges and len(sub.annotations) > 1:
                    cands = self._build(sub, params, exclude=a_idx)
                    ann.objects = [-1] * len(ann.edges)
                    self._assign(sub, a_idx, cands, params)
        # Renumber objects densely, in order of first appearance.
        ids: dict[int, int] = {}
        for ann in sub.annotations:
            ann.objects = [ids.setdefault(k, len(ids)) if k >= 0 else -1 for k in ann.objects]
        sub.n_objects = len(ids)

    # -- posterior and risk --

    def _posterior(self, sub: _Subject, cands: list[_Candidate],
                   params: Mapping[str, _Params]) -> float:
        """Fill ``p_real``/``p_misplaced`` of each candidate; return the expected risk."""
        mu, nu, _, root_shape = self._globals()
        loc_iou = self.priors.loc_iou
        base = math.log(mu / nu)
        miss_all = 1.0
        for ann in sub.annotations:
            if ann.counts:
                p = params[ann.volunteer]
                base += p[4]
                miss_all *= p[0]
        risk = mu * miss_all
        annotations = sub.annotations
        for c in cands:
            lo = base
            for a_idx, _, _, _ in c.members:
                p = params[annotations[a_idx].volunteer]
                lo += p[3] - p[4]
            c.log_odds = lo
            pr = c.p_real = _sigmoid(lo)
            c.p_misplaced = _misplaced(math.sqrt(c.var) * root_shape, loc_iou)
            if pr >= 0.5:
                risk += (1 - pr) + pr * c.p_misplaced
            else:
                risk += pr
        return risk

    def _objects(self, sub: _Subject, cands: list[_Candidate]) -> tuple[BoxObject, ...]:
        _, _, shape, _ = self._globals()
        b0, b1, b2, b3 = self._bias_vec() if self._bias_n else (0.0, 0.0, 0.0, 0.0)
        out = []
        for c in cands:
            x1, y1, x2, y2 = c.edges
            w, h, v = x2 - x1, y2 - y1, c.var
            if self._bias_n:
                # Remove the crowd's systematic offset learned from gold subjects.
                x1, y1, x2, y2 = x1 - b0 * w, y1 - b1 * h, x2 - b2 * w, y2 - b3 * h
                w, h = x2 - x1, y2 - y1
            se = (math.sqrt(v * shape[0]) * w, math.sqrt(v * shape[1]) * h,
                  math.sqrt(v * (shape[0] + shape[2])) * w, math.sqrt(v * (shape[1] + shape[3])) * h)
            vols = tuple(sub.annotations[a].volunteer for a, _, _, _ in c.members)
            out.append(BoxObject((x1, y1, w, h), se, c.p_real, c.p_misplaced, vols))
        return tuple(out)

    def _state(self, sub: _Subject) -> tuple[list[_Candidate], float, dict[str, _Params]]:
        params = self._params(sub)
        cands = self._build(sub, params)
        risk = self._posterior(sub, cands, params)
        return cands, risk, params

    # -- the live path --

    def add_classification(self, subject: str, volunteer: str, boxes: Sequence[Sequence[float]],
                           *, counts: bool = True,
                           gold: Sequence[Sequence[float]] | None = None) -> BoxResult:
        """Add one volunteer's boxes on one subject (an empty list: they saw nothing).

        ``counts=False`` records the classification without letting it into the consensus; a
        repeat by the same volunteer and a classification of a retired subject never count.
        ``gold`` gives the subject's true boxes: the volunteer is then credited against them at
        once, and the subject is a gold subject (which a ``RetirementPolicy`` never retires).
        Returns the subject's objects, expected risk and retirement decision.
        """
        clean = [_check_box(b) for b in boxes]
        truth = None if gold is None else [_check_box(b) for b in gold]
        sub = self._subjects.get(subject)
        if sub is None:
            sub = self._subjects[subject] = _Subject()
        if truth is not None:
            sub.gold = truth
        repeat = any(a.volunteer == volunteer for a in sub.annotations)
        counted = counts and sub.retired is None and not repeat
        ann = _Annotation(volunteer, clean, counted)
        sub.annotations.append(ann)
        if sub.cache is not None and sub.cache[0] == self._epoch:
            # Same skills as when last built: the cached objects are what _build would give.
            _, cands, params = sub.cache
            if volunteer not in params:
                params[volunteer] = self._skill(volunteer).params(self.priors)
        else:
            params = self._params(sub)
            cands = self._build(sub, params)
        if counted:
            self._assign(sub, len(sub.annotations) - 1, cands, params)
        sub.cache = (self._epoch, cands, params)
        credited: tuple[str, ...] = ()
        if self.learn and sub.gold is not None and not repeat:
            self._credit_gold(sub.gold, ann)
            credited = (volunteer,)
            cands, risk, params = self._state(sub)
        else:
            risk = self._posterior(sub, cands, params)
        summary = self._summary(sub, risk)
        if sub.retired is None:
            reason = self.policy.decide(summary)
            if reason is not None:
                sub.retired = reason
                if self.learn and sub.gold is None and not sub.credited:
                    self._credit_consensus(sub, cands, params)
                    sub.credited = True
                    credited = tuple(a.volunteer for a in sub.annotations if a.counts)
        return BoxResult(subject, self._objects(sub, cands), risk, summary.n_counted,
                         sub.retired, counted, credited)

    def _summary(self, sub: _Subject, risk: float) -> SubjectSummary:
        n = sum(1 for a in sub.annotations if a.counts)
        return SubjectSummary(n_counted=n, expected_risk=risk, is_gold=sub.gold is not None)

    def summary(self, subject: str) -> SubjectSummary:
        """The subject's retirement summary (``expected_risk`` = expected errors)."""
        sub = self._subjects[subject]
        return self._summary(sub, self._state(sub)[1])

    def result(self, subject: str) -> BoxResult:
        """The subject's objects, expected risk and counted annotations, built once (``objects`` and
        ``summary`` together)."""
        sub = self._subjects[subject]
        cands, risk, _ = self._state(sub)
        n = sum(1 for a in sub.annotations if a.counts)
        return BoxResult(subject, self._objects(sub, cands), risk, n, sub.retired, False, ())

    def objects(self, subject: str) -> tuple[BoxObject, ...]:
        """All candidate objects of a subject, with ``p_real``."""
        sub = self._subjects[subject]
        return self._objects(sub, self._state(sub)[0])

    def predict(self, subjects: Iterable[str] | None = None) -> dict[str, list[BoxObject]]:
        """Reported objects (``p_real >= 0.5``) for each subject."""
        names = self._subjects if subjects is None else subjects
        return {s: [o for o in self.objects(s) if o.p_real >= 0.5] for s in names}

    def retired(self, subject: str) -> str | None:
        sub = self._subjects.get(subject)
        return None if sub is None else sub.retired

    def retire(self, subject: str, reason: str) -> bool:
        """Retire a subject from outside the engine's policy (a whole-workflow decision): its
        volunteers are credited from its consensus now and later boxes no longer count. Returns
        False if the subject is unknown or already retired."""
        sub = self._subjects.get(subject)
        if sub is None or sub.retired is not None:
            return False
        sub.retired = reason
        self.finalise(subject)
        return True

    def unseen_risk(self) -> float:
        """The expected errors on a subject nobody has drawn on yet: every object it holds is
        missed (the engine's learned number of objects per subject)."""
        return float(self._globals()[0])

    def finalise(self, subject: str) -> None:
        """Credit a subject's volunteers from its consensus now (e.g. when it is withdrawn)."""
        sub = self._subjects[subject]
        if self.learn and not sub.credited and sub.gold is None:
            cands, _, params = self._state(sub)
            self._credit_consensus(sub, cands, params)
            sub.credited = True

    # -- learning --

    def _invalidate(self) -> None:
        """Skills or rates changed: drop the cached parameters and every subject's objects."""
        self._params_cache = None
        self._epoch += 1

    def _credit_gold(self, truth: list[Box], ann: _Annotation) -> None:
        """Hard counts for one classification of a gold subject."""
        _, nu, shape, _ = self._globals()
        var_j = self._skill(ann.volunteer).params(self.priors)[2]
        _gold_counts(self._skills, ann, [_edges(b) for b in truth], var_j, shape, nu,
                     self.priors.match_gate, self._add_shape, self._add_bias)
        self._skills[ann.volunteer]._cache = None
        self._invalidate()

    def _add_bias(self, e: Sequence[float]) -> None:
        for q in range(4):
            self._bias[q] += max(min(e[q], 1.0), -1.0)
        self._bias_n += 1

    def _add_shape(self, e: Sequence[float], weight: float, var: float) -> None:
        for q in range(4):
            self._shape[q] += weight * min(e[q] ** 2 / max(var, 1e-4), 100.0)
        self._shape_n += weight

    def _credit_consensus(self, sub: _Subject, cands: list[_Candidate],
                          params: Mapping[str, _Params]) -> None:
        """Soft counts (the EM E-step) for every counted volunteer of a subject."""
        mu, nu, shape, _ = self._globals()
        seen = [a.volunteer for a in sub.annotations if a.counts]
        miss_all = quiet_all = 1.0
        for v in seen:
            miss_all *= params[v][0]
            quiet_all *= 1 - params[v][1]
        e_real = sum(c.p_real for c in cands) + mu * miss_all
        e_dis = sum(1 - c.p_real for c in cands) + nu * quiet_all
        self._rates["subjects"] += 1
        self._rates["objects"] += e_real
        for v in seen:
            s = self._skills[v]
            s.real_seen += e_real
            s.distractors_seen += e_dis
            s._cache = None
        k0, k1, k2, k3 = shape
        for c in cands:
            p = c.p_real
            multi = len(c.members) > 1
            for a_idx, _, z, var_j in c.members:
                s = self._skills[sub.annotations[a_idx].volunteer]
                s.tp += p
                s.fp += 1 - p
                if multi:
                    e = _norm_err(z, c.edges)
                    # Residual against a mean that includes the box itself: add back its var.
                    s.sq += p * ((min(e[0] ** 2 / k0, 1.0) + min(e[1] ** 2 / k1, 1.0)
                                  + min(e[2] ** 2 / k2, 1.0) + min(e[3] ** 2 / k3, 1.0)) / 4
                                 + c.var)
                    s.n_sq += p
                    self._add_shape(e, p, var_j)
        self._invalidate()

    def fit(self, classifications: Iterable[tuple[str, str, Sequence[Sequence[float]]]],
            gold: Mapping[str, Sequence[Sequence[float]]] | None = None, *,
            n_iter: int = 8, rematch: int = 1, refine: bool = False) -> BoxEngine:
        """Batch EM over a whole log of ``(subject, volunteer, boxes)``, from the priors.

        Every first classification of a subject by a volunteer counts; nothing retires.
        Subjects in ``gold`` credit their volunteers against the true boxes (hard counts); the
        others by consensus (soft counts). The boxes are matched at the start and again after
        each of ``rematch`` evenly spaced EM iterations, with the skills learned so far
        (``refine``: each volunteer's boxes matched a second time against all the others').
        Returns ``self``; read results with ``predict``/``objects``/``summary``.
        """
        gold = dict(gold or {})
        self._skills = {}
        self._subjects = {}
        self._rates = {"subjects": 0.0, "objects": 0.0}
        self._shape = [0.0, 0.0, 0.0, 0.0]
        self._shape_n = 0.0
        self._bias = [0.0, 0.0, 0.0, 0.0]
        self._bias_n = 0.0
        self._invalidate()
        for subject, volunteer, boxes in classifications:
            sub = self._subjects.get(subject)
            if sub is None:
                sub = self._subjects[subject] = _Subject()
                if subject in gold:
                    sub.gold = [_check_box(b) for b in gold[subject]]
            repeat = any(a.volunteer == volunteer for a in sub.annotations)
            sub.annotations.append(
                _Annotation(volunteer, [_check_box(b) for b in boxes], not repeat))
            self._skill(volunteer)
        rematch_at = {int(round((r + 1) * n_iter / (rematch + 1))) for r in range(rematch)}
        arrays = None
        for it in range(n_iter + 1):
            if arrays is None or it in rematch_at:
                for sub in self._subjects.values():
                    self._rematch(sub, refine)
                arrays = _FitArrays(self)
            if it == n_iter:
                break
            self._em_step(arrays)
        return self

    def _em_step(self, a: _FitArrays) -> None:
        """One EM iteration over every subject at once (numpy), gold subjects by hand."""
        pr = self.priors
        mu, nu, shape, _ = self._globals()
        shp = np.asarray(shape)
        n_vol = len(a.vols)
        par = np.array([self._skills[v].params(pr) for v in a.vols]).reshape(n_vol, 5)
        p_miss, p_fp, var, lr_yes, lr_no = par.T
        n_c, n_s = len(a.c_sub), a.n_sub
        tp = np.zeros(n_vol)
        fp = np.zeros(n_vol)
        real_seen = np.zeros(n_vol)
        dis_seen = np.zeros(n_vol)
        sq = np.zeros(n_vol)
        n_sq = np.zeros(n_vol)
        shape_sum = np.zeros(4)
        shape_n = 0.0
        objects = 0.0
        if n_c:
            mv, mc = a.m_vol, a.m_cand
            vm = var[mv]
            w = 1.0 / vm
            sw = np.bincount(mc, w, n_c)
            mean = np.stack([np.bincount(mc, w * a.m_edges[:, q], n_c) for q in range(4)], 1)
            mean /= sw[:, None]
            if pr.robust_dof > 0:
                e = _norm_err_arr(a.m_edges, mean[mc])
                d2 = (e ** 2 / shp).sum(1) / vm
                w = np.where(a.c_big[mc], (pr.robust_dof + 4) / (pr.robust_dof + d2) / vm, w)
                sw = np.bincount(mc, w, n_c)
                mean = np.stack([np.bincount(mc, w * a.m_edges[:, q], n_c) for q in range(4)], 1)
                mean /= sw[:, None]
            var_c = 1.0 / sw
            base = math.log(mu / nu) + np.bincount(a.s_sub, lr_no[a.s_vol], n_s)
            lo = base[a.c_sub] + np.bincount(mc, (lr_yes - lr_no)[mv], n_c)
            p = 1.0 / (1.0 + np.exp(-lo))
            miss_all = np.exp(np.bincount(a.s_sub, np.log(p_miss[a.s_vol]), n_s))
            quiet_all = np.exp(np.bincount(a.s_sub, np.log1p(-p_fp[a.s_vol]), n_s))
            e_real = np.bincount(a.c_sub, p, n_s) + mu * miss_all
            e_dis = np.bincount(a.c_sub, 1 - p, n_s) + nu * quiet_all
            real_seen += np.bincount(a.s_vol, e_real[a.s_sub], n_vol)
            dis_seen += np.bincount(a.s_vol, e_dis[a.s_sub], n_vol)
            pm = p[mc]
            tp += np.bincount(mv, pm, n_vol)
            fp += np.bincount(mv, 1 - pm, n_vol)
            wm = pm * a.c_multi[mc]
            e = _norm_err_arr(a.m_edges, mean[mc])
            e2 = e ** 2
            term = np.minimum(e2 / shp, 1.0).sum(1) / 4 + var_c[mc]
            sq += np.bincount(mv, wm * term, n_vol)
            n_sq += np.bincount(mv, wm, n_vol)
            shape_sum += (wm[:, None] * np.minimum(e2 / np.maximum(vm, 1e-4)[:, None], 100.0)
                          ).sum(0)
            shape_n += float(wm.sum())
            objects = float(e_real.sum())
        elif n_s:
            miss_all = np.exp(np.bincount(a.s_sub, np.log(p_miss[a.s_vol]), n_s))
            quiet_all = np.exp(np.bincount(a.s_sub, np.log1p(-p_fp[a.s_vol]), n_s))
            real_seen += np.bincount(a.s_vol, (mu * miss_all)[a.s_sub], n_vol)
            dis_seen += np.bincount(a.s_vol, (nu * quiet_all)[a.s_sub], n_vol)
            objects = float((mu * miss_all).sum())
        skills = {v: _Skill(float(tp[i]), float(fp[i]), float(real_seen[i]), float(dis_seen[i]),
                            float(sq[i]), float(n_sq[i])) for i, v in enumerate(a.vols)}
        acc = {"shape": shape_sum.tolist(), "n": shape_n, "bias": [0.0] * 4, "bias_n": 0.0}

        def bias_add(e: Sequence[float]) -> None:
            for q in range(4):
                acc["bias"][q] += max(min(e[q], 1.0), -1.0)
            acc["bias_n"] += 1

        def shape_add(e: Sequence[float], weight: float, var_j: float) -> None:
            for q in range(4):
                acc["shape"][q] += weight * min(e[q] ** 2 / max(var_j, 1e-4), 100.0)
            acc["n"] += weight

        n_gold = 0
        for sub in a.gold_subjects:
            t_edges = [_edges(b) for b in sub.gold or ()]
            for ann in sub.annotations:
                if ann.counts:
                    _gold_counts(skills, ann, t_edges, self._skills[ann.volunteer].params(pr)[2],
                                 shape, nu, pr.match_gate, shape_add, bias_add)
            n_gold += 1
            objects += len(t_edges)
        self._skills = skills
        self._rates = {"subjects": float(n_s + n_gold), "objects": objects}
        self._shape = acc["shape"]
        self._shape_n = acc["n"]
        self._bias = acc["bias"]
        self._bias_n = acc["bias_n"]
        self._invalidate()

    # -- state --

    def skill_to_dict(self, volunteer: str) -> dict:
        """The volunteer's skill evidence as a small JSON-safe dict (one Redis key)."""
        return self._skill(volunteer).to_dict() if volunteer in self._skills else \
            _Skill().to_dict()

    def load_skill(self, volunteer: str, data: Mapping) -> None:
        self._skills[volunteer] = _Skill.from_dict(data)
        self._invalidate()

    def subject_to_dict(self, subject: str) -> dict:
        """The subject's state (its boxes, their objects, gold, retirement) as a JSON dict."""
        return self._subjects[subject].to_dict()

    def load_subject(self, subject: str, data: Mapping) -> None:
        self._subjects[subject] = _Subject.from_dict(data)

    def globals_to_dict(self) -> dict:
        """Engine-wide learned rates (subjects and expected objects seen, edge-noise shape)."""
        return {"rates": dict(self._rates), "shape": list(self._shape), "shape_n": self._shape_n,
                "bias": list(self._bias), "bias_n": self._bias_n}

    def load_globals(self, data: Mapping) -> None:
        self._rates = {k: float(v) for k, v in data["rates"].items()}
        self._shape = [float(v) for v in data["shape"]]
        self._shape_n = float(data["shape_n"])
        self._bias = [float(v) for v in data.get("bias", (0.0, 0.0, 0.0, 0.0))]
        self._bias_n = float(data.get("bias_n", 0.0))
        self._invalidate()

    def to_dict(self) -> dict:
        """The whole engine as JSON-safe data; ``from_dict`` rebuilds an identical engine."""
        return {
            "version": STATE_VERSION,
            "priors": self.priors.to_dict(),
            "policy": self.policy.to_dict(),
            "learn": self.learn,
            "globals": self.globals_to_dict(),
            "skills": {v: s.to_dict() for v, s in self._skills.items()},
            "subjects": {k: s.to_dict() for k, s in self._subjects.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping) -> BoxEngine:
        if data.get("version") != STATE_VERSION:
            raise ValueError(f"unsupported box engine state version {data.get('version')!r}")
        eng = cls(BoxPriors.from_dict(data["priors"]), policy_from_dict(data["policy"]),
                  learn=bool(data["learn"]))
        eng.load_globals(data["globals"])
        for v, s in data["skills"].items():
            eng.load_skill(v, s)
        for k, s in data["subjects"].items():
            eng.load_subject(k, s)
        return eng

    def describe(self) -> dict:
        """Learned engine-wide parameters, for reports."""
        mu, nu, shape, _ = self._globals()
        return {"objects_per_subject": mu, "distractors_per_subject": nu,
                "edge_noise_shape": list(shape), "edge_bias": list(self._bias_vec())}


def _norm_err(z: _Edges, b: _Edges) -> tuple[float, float, float, float]:
    """Edge errors of ``z`` against ``b`` in units of ``b``'s width and height."""
    w = max(b[2] - b[0], _EPS)
    h = max(b[3] - b[1], _EPS)
    return ((z[0] - b[0]) / w, (z[1] - b[1]) / h, (z[2] - b[2]) / w, (z[3] - b[3]) / h)


def _gold_counts(skills: dict[str, _Skill], ann: _Annotation, t_edges: list[_Edges], var_j: float,
                 shape: Sequence[float], nu: float, gate: float, shape_add, bias_add) -> None:
    """Hard counts of one classification against a gold subject's true boxes."""
    s = skills.get(ann.volunteer)
    if s is None:
        s = skills[ann.volunteer] = _Skill()
    s.real_seen += len(t_edges)
    s.distractors_seen += nu
    matched = 0
    if ann.edges and t_edges:
        cost = np.zeros((len(ann.edges), len(t_edges)))
        errs = {}
        for i, z in enumerate(ann.edges):
            for k, b in enumerate(t_edges):
                e = _norm_err(z, b)
                d2 = sum(e[c] ** 2 / shape[c] for c in range(4)) / var_j
                errs[i, k] = e
                cost[i, k] = d2 - gate if d2 < gate else 0.0
        rows, cols = linear_sum_assignment(cost)
        for r, c in zip(rows, cols, strict=True):
            if cost[r, c] < 0:
                matched += 1
                e = errs[int(r), int(c)]
                s.sq += sum(min(e[q] ** 2 / shape[q], 1.0) for q in range(4)) / 4
                s.n_sq += 1
                shape_add(e, 1.0, var_j)
                bias_add(e)
    s.tp += matched
    s.fp += len(ann.edges) - matched


def _norm_err_arr(z: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``_norm_err`` for rows of edges."""
    w = np.maximum(b[:, 2] - b[:, 0], _EPS)
    h = np.maximum(b[:, 3] - b[:, 1], _EPS)
    d = z - b
    return np.stack([d[:, 0] / w, d[:, 1] / h, d[:, 2] / w, d[:, 3] / h], 1)


class _FitArrays:
    """The matched boxes of every consensus subject as flat arrays, for a vectorised EM step."""

    def __init__(self, eng: BoxEngine) -> None:
        self.vols = list(eng._skills)
        index = {v: i for i, v in enumerate(self.vols)}
        self.gold_subjects = [s for s in eng._subjects.values() if s.gold is not None]
        s_sub, s_vol, c_sub, m_vol, m_cand, edges, sizes = [], [], [], [], [], [], []
        n_sub = 0
        for sub in eng._subjects.values():
            if sub.gold is not None:
                continue
            first = len(c_sub)
            for ann in sub.annotations:
                if not ann.counts:
                    continue
                s_sub.append(n_sub)
                s_vol.append(index[ann.volunteer])
                for i, k in enumerate(ann.objects):
                    m_vol.append(index[ann.volunteer])
                    m_cand.append(first + k)
                    edges.append(ann.edges[i])
            c_sub.extend([n_sub] * sub.n_objects)
            n_sub += 1
        self.n_sub = n_sub
        self.s_sub = np.array(s_sub, dtype=np.int64)
        self.s_vol = np.array(s_vol, dtype=np.int64)
        self.c_sub = np.array(c_sub, dtype=np.int64)
        self.m_vol = np.array(m_vol, dtype=np.int64)
        self.m_cand = np.array(m_cand, dtype=np.int64)
        self.m_edges = np.array(edges, dtype=float).reshape(-1, 4)
        sizes = np.bincount(self.m_cand, minlength=len(c_sub))
        self.c_multi = (sizes > 1).astype(float)
        self.c_big = sizes > 2



def _check_box(box: Sequence[float]) -> Box:
    if len(box) != 4:
        raise ValueError(f"a box needs 4 numbers (x, y, width, height), got {len(box)}")
    x, y, w, h = float(box[0]), float(box[1]), float(box[2]), float(box[3])
    if not (math.isfinite(x) and math.isfinite(y) and math.isfinite(w) and math.isfinite(h)):
        raise ValueError("box coordinates must be finite numbers")
    if w <= 0 or h <= 0:
        raise ValueError(f"box width and height must be positive, got {w} x {h}")
    return (x, y, w, h)


@dataclass
class Score:
    """Precision, recall and F1 of reported boxes against gold at an IoU threshold."""

    tp: int = 0
    fp: int = 0
    fn: int = 0
    extra: dict = field(default_factory=dict)

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0

    @property
    def f1(self) -> float:
        d = 2 * self.tp + self.fp + self.fn
        return 2 * self.tp / d if d else 1.0


def score(pred: Mapping[str, Sequence[Box]], gold: Mapping[str, Sequence[Box]],
          iou: float = 0.5) -> Score:
    """Micro-averaged P/R/F1 over the subjects of ``gold`` (one-to-one matches, IoU >= iou)."""
    sc = Score()
    for subject, truth in gold.items():
        boxes = list(pred.get(subject, ()))
        m = match_boxes(boxes, list(truth), iou)
        sc.tp += m
        sc.fp += len(boxes) - m
        sc.fn += len(truth) - m
    return sc
