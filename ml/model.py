"""The galaxy CNN: a small convolutional network with one output head per question.

Galaxies have no preferred orientation, so the network is trained on randomly rotated and
reflected images and, at inference, averages its predictions over the 8 rotations/reflections
of the dihedral group D4 (Dieleman et al. 2015). Those 8 transforms permute pixels exactly, so
the averaged prediction is exactly invariant to 90° rotations and flips of the input.

Except for chirality: a mirror image of a clockwise spiral is an anticlockwise one. A head may
declare ``mirror_swaps``, pairs of answers that a reflection exchanges (``ModelConfig``). Such a
head is made equivariant instead of invariant: in training, an image the augmentation reflects
gets that head's target columns swapped (rotations keep chirality, so they keep the targets);
at inference, each reflected view's probabilities are swapped back into the image's own answer
order before the 8 views are averaged. Why per view, after the softmax (and after calibration):
the head's answer is about the image it sees, so a reflected view's "clockwise" is the image's
"anticlockwise"; and because D4 is a group, the views of a mirrored image are the views of the
image with their reflection flipped, so its averaged prediction is exactly the swapped
prediction, whatever the weights and calibration. Heads without swaps keep the invariant path,
unchanged.

Dropout sits only between the embedding (the penultimate layer) and the heads. That keeps Monte
Carlo dropout cheap: the convolutional trunk runs once per image and transform, and each Monte
Carlo sample only re-draws the dropout mask over the stored embeddings.

Each head outputs one logit per answer. With ``output="softmax"`` the answer probabilities are
the softmax of the logits (trained with soft-label cross-entropy); with ``output="dirichlet"``
the logits give Dirichlet concentrations ``1 + 99 * sigmoid(logit)`` (Zoobot, Walmsley et al.
2022) and the probabilities are the Dirichlet mean.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

OUTPUTS = ("softmax", "dirichlet")
REFLECTING = range(4, 8)  # the D4 elements of ``dihedral`` that mirror an image
MirrorSwaps = tuple[tuple[str, tuple[tuple[int, int], ...]], ...]


def check_mirror_swaps(key: str, pairs: Any, n_answers: int) -> tuple[tuple[int, int], ...]:
    """The answer pairs that a reflection swaps for head ``key``, checked and in a canonical
    order (each pair ``(low, high)``, pairs sorted). Raises ``ValueError`` naming the problem:
    each pair must be two distinct answer indices in ``0..n_answers - 1``, and no answer may be in
    two pairs (a reflection is its own inverse: it can only exchange answers two by two)."""
    where = f"mirror_swaps of head {key!r}"
    if isinstance(pairs, str | bytes) or not isinstance(pairs, Iterable):
        raise ValueError(f"{where} must be a list of [i, j] answer pairs, got {pairs!r}")
    seen: set[int] = set()
    out = []
    for pair in pairs:
        if isinstance(pair, str | bytes) or not isinstance(pair, Iterable) or len(pair := list(pair)) != 2:
            raise ValueError(f"{where}: {pair!r} is not a pair [i, j] of answer indices")
        if any(isinstance(i, bool) or not isinstance(i, numbers.Integral) for i in pair):
            raise ValueError(f"{where}: {pair!r} must hold two integer answer indices")
        i, j = sorted(int(v) for v in pair)
        if i == j:
            raise ValueError(f"{where}: pair {[i, j]} must name two different answers")
        if i < 0 or j >= n_answers:
            raise ValueError(f"{where}: pair {[i, j]} must name answers in 0..{n_answers - 1}")
        if {i, j} & seen:
            raise ValueError(f"{where}: answer {sorted({i, j} & seen)[0]} is in two pairs")
        seen |= {i, j}
        out.append((i, j))
    return tuple(sorted(out))


def mirror_permutation(pairs: Iterable[tuple[int, int]], n_answers: int) -> list[int]:
    """Answer ``j`` of an image is answer ``perm[j]`` of its mirror image (an involution)."""
    perm = list(range(n_answers))
    for i, j in pairs:
        perm[i], perm[j] = j, i
    return perm


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild the network (stored as JSON next to the weights)."""

    heads: tuple[tuple[str, int], ...]
    image_size: int = 64
    channels: tuple[int, ...] = (24, 48, 96, 192)
    embedding_dim: int = 128
    dropout: float = 0.3
    output: str = "softmax"
    # Per head, the answer pairs a reflection swaps: given as this or as a mapping
    # ``{question_key: [[i, j], ...]}``, stored as ``MirrorSwaps`` (heads with pairs, in head order).
    mirror_swaps: MirrorSwaps | Mapping[str, Any] = ()

    def __post_init__(self) -> None:
        heads = tuple((str(key), int(n)) for key, n in self.heads)
        object.__setattr__(self, "heads", heads)
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        if not heads:
            raise ValueError("a model needs at least one head (question_key, n_answers)")
        keys = [key for key, _ in heads]
        if len(set(keys)) != len(keys):
            raise ValueError(f"duplicate question keys in heads: {keys}")
        for key, n in heads:
            if n < 2:
                raise ValueError(f"head {key!r} needs at least 2 answers, got {n}")
        if self.output not in OUTPUTS:
            raise ValueError(f"output must be one of {OUTPUTS}, got {self.output!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.image_size < 16 or self.image_size % 2**len(self.channels) != 0:
            raise ValueError(
                f"image_size must be >= 16 and divisible by {2 ** len(self.channels)}, "
                f"got {self.image_size}"
            )
        object.__setattr__(self, "mirror_swaps", _normalise_swaps(self.mirror_swaps, heads))

    def mirror_permutation(self, key: str) -> list[int] | None:
        """Head ``key``'s answer permutation under a reflection, or None if it swaps nothing
        (then the head is invariant to reflections)."""
        pairs = dict(self.mirror_swaps).get(key)
        return None if pairs is None else mirror_permutation(pairs, dict(self.heads)[key])

    def to_dict(self) -> dict:
        """A JSON-serialisable dict (lists instead of tuples)."""
        data = asdict(self)
        data["heads"] = [list(h) for h in self.heads]
        data["channels"] = list(self.channels)
        data["mirror_swaps"] = {key: [list(p) for p in pairs] for key, pairs in self.mirror_swaps}
        return data

    @classmethod
    def from_dict(cls, data: dict) -> ModelConfig:
        """Inverse of :meth:`to_dict`."""
        data = dict(data)
        data["heads"] = tuple(tuple(h) for h in data["heads"])
        data["channels"] = tuple(data["channels"])
        data["mirror_swaps"] = data.get("mirror_swaps") or ()  # configs saved before swaps: none
        return cls(**data)


def _normalise_swaps(swaps: Any, heads: tuple[tuple[str, int], ...]) -> MirrorSwaps:
    if not isinstance(swaps, Mapping | tuple | list):
        raise ValueError(f"mirror_swaps must map question keys to answer pairs, got {swaps!r}")
    items = swaps.items() if isinstance(swaps, Mapping) else swaps
    sizes = dict(heads)
    given: dict[str, tuple[tuple[int, int], ...]] = {}
    for item in items:
        if isinstance(item, str | bytes) or not isinstance(item, Iterable) or len(item := tuple(item)) != 2:
            raise ValueError(f"mirror_swaps must map question keys to answer pairs, got {item!r}")
        key, pairs = str(item[0]), item[1]
        if key not in sizes:
            raise ValueError(f"mirror_swaps names no head {key!r}; heads are {list(sizes)}")
        if key in given:
            raise ValueError(f"mirror_swaps names head {key!r} twice")
        given[key] = check_mirror_swaps(key, pairs, sizes[key])
    return tuple((key, given[key]) for key, _ in heads if given.get(key))


def view_columns(permutation: list[int] | None, n_views: int) -> torch.Tensor | None:
    """For views ``t = 0..n_views - 1`` of an image under D4 element ``t`` (``dihedral``): the
    ``(T, K)`` column indices that put each view's answers in the image's own order (the
    reflection ``permutation`` on the mirroring views, the identity on the others); None when
    that changes nothing (no permutation, or no mirroring view)."""
    if permutation is None or n_views <= REFLECTING.start:
        return None
    identity = list(range(len(permutation)))
    return torch.tensor([permutation if t in REFLECTING else identity for t in range(n_views)])


def align_views(probs: torch.Tensor, columns: torch.Tensor | None) -> torch.Tensor:
    """Per-view probabilities ``(T, N, K)`` in the image's answer order: image answer ``j`` of
    view ``t`` is the view's answer ``columns[t, j]`` (``view_columns``; None: as given)."""
    if columns is None:
        return probs
    return torch.gather(probs, -1, columns[:, None, :].expand(probs.shape))


def dihedral(x: torch.Tensor, k: int) -> torch.Tensor:
    """Apply the k-th element (0..7) of D4 to images ``(..., H, W)``: rotate k % 4 quarter
    turns, then mirror left-right when k >= 4 (``REFLECTING``). Exact pixel permutations."""
    if not 0 <= k < 8:
        raise ValueError(f"k must be in 0..7, got {k}")
    y = torch.rot90(x, k % 4, dims=(-2, -1))
    return torch.flip(y, dims=(-1,)) if k >= 4 else y


def _conv_block(c_in: int, c_out: int, n_convs: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(n_convs):
        layers += [
            nn.Conv2d(c_in if i == 0 else c_out, c_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
        ]
    layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


class GalaxyCNN(nn.Module):
    """Conv trunk -> global average pool -> embedding -> dropout -> one linear head per question.

    Inputs are float images ``(N, 3, H, W)`` in [0, 1]. The first block has a single
    convolution (it runs at full resolution, where convolutions cost most); later blocks two.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        blocks = []
        c_in = 3
        for i, c_out in enumerate(config.channels):
            blocks.append(_conv_block(c_in, c_out, 1 if i == 0 else 2))
            c_in = c_out
        self.trunk = nn.Sequential(*blocks)
        self.embedding = nn.Sequential(nn.Linear(c_in, config.embedding_dim), nn.ReLU(inplace=True))
        self.dropout = nn.Dropout(config.dropout)
        self.heads = nn.ModuleDict(
            {key: nn.Linear(config.embedding_dim, n) for key, n in config.heads}
        )
        # Inputs are dark sky with a bright centre; centring them once keeps the first layer's
        # BatchNorm statistics well conditioned from the first batch on.
        self.register_buffer("input_mean", torch.tensor([0.08, 0.07, 0.06]).view(1, 3, 1, 1))
        # channels_last runs the convolutions about 1.4x faster on CPU (oneDNN).
        self.to(memory_format=torch.channels_last)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The penultimate layer (before dropout): ``(N, embedding_dim)``."""
        h = self.trunk((x - self.input_mean).contiguous(memory_format=torch.channels_last))
        return self.embedding(h.mean(dim=(-2, -1)))

    def head_logits(self, embedding: torch.Tensor) -> dict[str, torch.Tensor]:
        """Head logits from embeddings (dropout applied in training mode only; Monte Carlo
        dropout at inference draws its own masks, see ``GalaxyClassifier.mc_predict``)."""
        h = self.dropout(embedding)
        return {key: head(h) for key, head in self.heads.items()}

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.head_logits(self.embed(x))

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """Answer probabilities of one head from its logits."""
        if self.config.output == "dirichlet":
            alpha = concentrations(logits)
            return alpha / alpha.sum(dim=-1, keepdim=True)
        return torch.softmax(logits, dim=-1)


def concentrations(logits: torch.Tensor) -> torch.Tensor:
    """Dirichlet concentrations from head logits, in (1, 100) as in Zoobot."""
    return 1.0 + 99.0 * torch.sigmoid(logits)
