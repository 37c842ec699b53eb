"""``GalaxyClassifier``: the API the platform calls to train, store and query the CNN.

Images are given either as a list of file paths (centre-cropped and resized on load, cached
under ``cache_dir`` when one is set) or as a uint8 array ``(N, H, W, 3)`` that is already the
view the model sees (resized if its size differs; use ``ml.images.preprocess`` to crop raw
cut-outs first). Targets are ``{question_key: (N, K) soft labels or counts}`` or integer class
labels, see ``ml.train.as_targets``.

Predictions, Monte Carlo samples and embeddings average over the 8 rotations/reflections of
D4 when ``tta`` is on (the default), which makes them invariant to those transforms; except that
a head with ``mirror_swaps`` (answers a reflection exchanges, e.g. clockwise and anticlockwise
spirals) is made equivariant: each mirrored view's probabilities are swapped back into the
image's answer order before the average, so the prediction for a mirrored image is the swapped
prediction (see ``ml.model``). Embeddings stay invariant (they describe a galaxy up to
orientation and mirroring).
``calibrate`` refits each head's logits on known answers (gold): see ``ml.calibration``;
``cross_calibrate`` also says how well that does, out of fold.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from ml.calibration import apply_vector_scaling, fit_vector_scaling
from ml.images import DEFAULT_CROP_FRACTION, load_images, preprocess, to_tensor
from ml.model import GalaxyCNN, ModelConfig, align_views, dihedral, view_columns
from ml.pretrain import pretrain_contrastive
from ml.train import GalaxyDataset, TargetsLike, train

FORMAT = "chorus-galaxy-cnn/1"
ImagesLike = np.ndarray | Sequence[str | os.PathLike]


class GalaxyClassifier:
    """A CNN with one head per question of a workflow's decision tree.

    ``heads`` lists ``(question_key, n_answers)``. ``output`` is ``"softmax"`` (train on soft
    labels such as the engine's posterior) or ``"dirichlet"`` (train on raw vote counts with
    the Dirichlet-multinomial likelihood). ``seed`` fixes the initial weights and training.
    ``mirror_swaps`` maps a question key to the answer pairs that a reflection exchanges, e.g.
    ``{"T1": [(1, 2)]}`` for edge-on / clockwise / anticlockwise; other heads are invariant.
    """

    def __init__(
        self,
        heads: Sequence[tuple[str, int]],
        image_size: int = 64,
        crop_fraction: float = DEFAULT_CROP_FRACTION,
        output: str = "softmax",
        channels: Sequence[int] = (24, 48, 96, 192),
        embedding_dim: int = 128,
        dropout: float = 0.3,
        seed: int = 0,
        cache_dir: str | os.PathLike | None = None,
        mirror_swaps: Mapping[str, Sequence[Sequence[int]]] | None = None,
    ) -> None:
        self.config = ModelConfig(
            heads=tuple(heads), image_size=image_size, channels=tuple(channels),
            embedding_dim=embedding_dim, dropout=dropout, output=output,
            mirror_swaps=mirror_swaps or {},
        )
        if not 0.0 < crop_fraction <= 1.0:
            raise ValueError(f"crop_fraction must be in (0, 1], got {crop_fraction}")
        self.crop_fraction = float(crop_fraction)
        self.seed = int(seed)
        self.cache_dir = cache_dir
        self.model = self._new_model()
        self.history: list[dict] = []
        # Per head: {"scale": s, "bias": [...], "n": subjects} fitted by ``calibrate``; empty: raw.
        self.calibration: dict[str, dict[str, Any]] = {}

    def _new_model(self) -> GalaxyCNN:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            model = GalaxyCNN(self.config)
        return model.eval()

    @property
    def heads(self) -> tuple[tuple[str, int], ...]:
        """The ``(question_key, n_answers)`` of each output head."""
        return self.config.heads

    @property
    def mirror_swaps(self) -> dict[str, tuple[tuple[int, int], ...]]:
        """``{question_key: ((i, j), ...)}``: the answers a reflection swaps, for the heads that have any."""
        return dict(self.config.mirror_swaps)

    # -- images -------------------------------------------------------------------------
    def load(self, images: ImagesLike) -> np.ndarray:
        """The model's view of ``images``: uint8 ``(N, S, S, 3)``."""
        size = self.config.image_size
        if isinstance(images, np.ndarray):
            if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
                raise ValueError(
                    f"image arrays must be uint8 (N, H, W, 3), got {images.dtype} {images.shape}"
                )
            if images.shape[1:3] == (size, size):
                return images
            return np.stack([preprocess(im, size, 1.0) for im in images]) if len(images) else (
                np.empty((0, size, size, 3), np.uint8))
        if isinstance(images, (str, os.PathLike)):
            raise ValueError("give a list of image paths, not a single path")
        return load_images(list(images), size, self.crop_fraction, self.cache_dir)

    # -- training -----------------------------------------------------------------------
    def fit(
        self,
        images: ImagesLike,
        targets: TargetsLike,
        epochs: int = 20,
        validation: tuple[ImagesLike, TargetsLike] | None = None,
        **train_kwargs,
    ) -> dict:
        """Train from freshly initialised (seeded) weights; returns training metrics.
        ``train_kwargs`` go to ``ml.train.train`` (batch_size, lr, weight_decay, augment, min_steps,
        and the callbacks ``log``, after every epoch, and ``on_step``, after every optimiser step)."""
        self.model = self._new_model()
        self.history = []
        return self._train(images, targets, epochs, validation, None, train_kwargs)

    def partial_fit(
        self,
        images: ImagesLike,
        targets: TargetsLike,
        epochs: int = 3,
        validation: tuple[ImagesLike, TargetsLike] | None = None,
        **train_kwargs,
    ) -> dict:
        """Continue training from the current weights (warm start), e.g. on newly retired
        subjects plus a replay sample of older ones. ``train_kwargs``: as for ``fit``."""
        state = {k: v.clone() for k, v in self.model.state_dict().items()}
        return self._train(images, targets, epochs, validation, state, train_kwargs)

    def _train(
        self,
        images: ImagesLike,
        targets: TargetsLike,
        epochs: int,
        validation: tuple[ImagesLike, TargetsLike] | None,
        warm_state: dict[str, torch.Tensor] | None,
        train_kwargs: dict,
    ) -> dict:
        dataset = GalaxyDataset(self.load(images), targets, self.heads)
        self.calibration = {}  # fitted to the old weights: meaningless for the new ones
        val = None
        if validation is not None:
            val = GalaxyDataset(self.load(validation[0]), validation[1], self.heads)
        train_kwargs.setdefault("seed", self.seed + len(self.history))
        metrics = train(self.model, dataset, epochs, warm_start_state=warm_state,
                        val_dataset=val, **train_kwargs)
        self.history.append({k: v for k, v in metrics.items() if k != "epochs"}
                            | {"epochs": len(metrics["epochs"])})
        return metrics

    def pretrain(self, images: ImagesLike, epochs: int = 15, **pretrain_kwargs) -> dict:
        """Self-supervised pretraining of the trunk on unlabelled images (``ml.pretrain``): the
        weights are changed in place, the heads not. Fine-tune afterwards with ``partial_fit``
        (``fit`` starts again from random weights). ``pretrain_kwargs`` go to
        ``ml.pretrain.pretrain_contrastive`` (batch_size, lr, temperature, seed, on_step, log)."""
        pretrain_kwargs.setdefault("seed", self.seed)
        self.calibration = {}
        metrics = pretrain_contrastive(self.model, self.load(images), epochs, **pretrain_kwargs)
        self.history.append({"pretraining": True, "n_images": metrics["n_images"], "epochs": len(metrics["epochs"]),
                             "train_seconds": metrics["train_seconds"],
                             "loss": metrics["epochs"][-1]["loss"] if metrics["epochs"] else None})
        return metrics

    # -- inference ----------------------------------------------------------------------
    @torch.no_grad()
    def _transformed_embeddings(self, images: ImagesLike, tta: bool,
                                batch_size: int = 256) -> torch.Tensor:
        """Embeddings ``(T, N, D)`` of each image under T = 8 (tta) or 1 transforms; view ``t`` is
        the image under D4 element ``t`` (``ml.model.dihedral``; 4..7 mirror)."""
        arr = self.load(images)
        self.model.eval()
        ks = range(8) if tta else range(1)
        out = torch.empty(len(ks), arr.shape[0], self.config.embedding_dim)
        for start in range(0, arr.shape[0], batch_size):
            x = to_tensor(arr[start : start + batch_size])
            for t, k in enumerate(ks):
                out[t, start : start + x.shape[0]] = self.model.embed(dihedral(x, k))
        return out

    def _view_columns(self, key: str, n_views: int) -> torch.Tensor | None:
        """How head ``key``'s answers of each of ``n_views`` views map to the image's answers
        (``ml.model.view_columns``); None for a head without ``mirror_swaps`` or without TTA."""
        return view_columns(self.config.mirror_permutation(key), n_views)

    def _probs(self, emb: torch.Tensor) -> dict[str, torch.Tensor]:
        """Head probabilities ``(T, N, K)`` from the views' embeddings ``(T, N, D)`` (no dropout),
        calibrated where fitted, each view's answers in the image's own order (so that averaging
        over views is right for heads with ``mirror_swaps`` too)."""
        out = {}
        for key, head in self.model.heads.items():
            logits = head(emb)
            if key in self.calibration:
                logits = apply_vector_scaling(logits, self.calibration[key]["scale"], self.calibration[key]["bias"])
            out[key] = align_views(self.model.probabilities(logits), self._view_columns(key, emb.shape[0]))
        return out

    @torch.no_grad()
    def calibrate(self, images: ImagesLike, labels: Mapping[str, np.ndarray], tta: bool = True) -> dict[str, dict]:
        """Fit each labelled head's ``scale`` and ``bias`` (``ml.calibration``) to known answers,
        e.g. experts' answers on gold subjects, so that its probabilities mean what they say.

        ``labels``: ``{question_key: (N,) int answers}``; only ``output="softmax"`` heads. Calibrate
        with the ``tta`` setting you will predict with. Returns what was fitted; ``fit`` and
        ``partial_fit`` forget it (new weights need a new calibration)."""
        self._fit_calibration(self._calibration_embeddings(images, labels, tta), labels)
        return {k: dict(v) for k, v in self.calibration.items()}

    def _calibration_embeddings(self, images: ImagesLike, labels: Mapping[str, np.ndarray], tta: bool) -> torch.Tensor:
        """The embeddings to calibrate on, once the labels are checked to be for softmax heads."""
        if self.config.output != "softmax":
            raise ValueError("calibration is for softmax heads (Dirichlet outputs are vote fractions)")
        unknown = set(labels) - {k for k, _ in self.heads}
        if unknown:
            raise ValueError(f"no head named {sorted(unknown)}")
        return self._transformed_embeddings(images, tta)

    def _fit_calibration(self, emb: torch.Tensor, labels: Mapping[str, np.ndarray]) -> None:
        for key, y in labels.items():
            with torch.enable_grad():
                scale, bias = fit_vector_scaling(self.model.heads[key](emb), np.asarray(y),
                                                 view_columns=self._view_columns(key, emb.shape[0]))
            self.calibration[key] = {"scale": scale, "bias": bias, "n": int(len(y))}

    @torch.no_grad()
    def cross_calibrate(
        self, images: ImagesLike, labels: Mapping[str, np.ndarray], folds: np.ndarray, tta: bool = True
    ) -> dict[str, np.ndarray]:
        """Calibrate on all the labelled images, as ``calibrate``, and return each image's
        out-of-fold probabilities ``{question_key: (N, K)}``: those of a calibration fitted on the
        other folds only (``folds``: ``(N,)`` fold numbers, at least two distinct).

        Why: measuring a calibrated model on the subjects it was calibrated on flatters it, and
        holding half of the gold out of calibration halves what measures it; cross-fitting
        measures every gold subject, out of sample, for the price of one pass of the CNN."""
        folds = np.asarray(folds)
        if len(np.unique(folds)) < 2:
            raise ValueError("cross-calibration needs at least two folds")
        emb = self._calibration_embeddings(images, labels, tta)
        out: dict[str, np.ndarray] = {}
        for key, y in labels.items():
            y = np.asarray(y)
            if len(y) != len(folds):
                raise ValueError(f"{len(folds)} fold numbers for {len(y)} answers")
            logits = self.model.heads[key](emb)
            columns = self._view_columns(key, emb.shape[0])
            probs = np.empty((len(y), logits.shape[-1]))
            for fold in np.unique(folds):
                held = folds == fold
                with torch.enable_grad():
                    scale, bias = fit_vector_scaling(logits[:, ~held], y[~held], view_columns=columns)
                view_probs = self.model.probabilities(apply_vector_scaling(logits[:, held], scale, bias))
                probs[held] = align_views(view_probs, columns).mean(0).numpy()
            out[key] = probs
        self._fit_calibration(emb, labels)  # what serves: every answer
        return out

    @torch.no_grad()
    def predict_proba(self, images: ImagesLike, tta: bool = True) -> dict[str, np.ndarray]:
        """Answer probabilities ``{question_key: (N, K)}``, averaged over D4 when ``tta`` (a mirrored
        view's ``mirror_swaps`` answers swapped back first: a mirrored image gets the swapped prediction)."""
        probs = self._probs(self._transformed_embeddings(images, tta))
        return {k: v.mean(0).numpy() for k, v in probs.items()}

    @torch.no_grad()
    def mc_predict(
        self, images: ImagesLike, n_samples: int = 30, tta: bool = True, seed: int = 0
    ) -> dict[str, np.ndarray]:
        """Monte Carlo dropout samples ``{question_key: (n_samples, N, K)}``.

        Each sample draws one dropout mask per image (one thinned network) and, with ``tta``,
        averages that network's predictions over the 8 transforms (swapped as in
        ``predict_proba``). The trunk runs once.
        """
        if n_samples < 1:
            raise ValueError(f"n_samples must be >= 1, got {n_samples}")
        emb = self._transformed_embeddings(images, tta)  # (T, N, D)
        p = self.config.dropout
        gen = torch.Generator().manual_seed(seed)
        samples: dict[str, list[torch.Tensor]] = {k: [] for k, _ in self.heads}
        for _ in range(n_samples):
            keep = torch.rand(emb.shape[1:], generator=gen) >= p
            dropped = emb * keep / (1.0 - p)
            for key, probs in self._probs(dropped).items():
                samples[key].append(probs.mean(0))
        return {k: torch.stack(v).numpy() for k, v in samples.items()}

    @torch.no_grad()
    def embed(self, images: ImagesLike, tta: bool = True) -> np.ndarray:
        """Penultimate-layer embeddings ``(N, embedding_dim)``, averaged over D4 when ``tta``.

        With ``tta`` they are invariant to rotations and mirroring, ``mirror_swaps`` or not: they
        describe a galaxy up to orientation and chirality (a galaxy and its mirror image get the
        same embedding), which is what similarity and diversity need; the chirality lives in the
        views, and ``predict_proba`` reads it there."""
        return self._transformed_embeddings(images, tta).mean(0).numpy()

    # -- storage ------------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        """Weights and config as one blob (for a ModelVersion row)."""
        meta = {
            "format": FORMAT,
            "model": self.config.to_dict(),
            "crop_fraction": self.crop_fraction,
            "seed": self.seed,
            "history": self.history,
            "calibration": self.calibration,
        }
        buf = io.BytesIO()
        state = {k: v.contiguous() for k, v in self.model.state_dict().items()}
        torch.save({"config": json.dumps(meta), "state_dict": state}, buf)
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, blob: bytes, cache_dir: str | os.PathLike | None = None
                   ) -> GalaxyClassifier:
        """Rebuild a classifier saved with :meth:`to_bytes` (safe: tensors and JSON only)."""
        try:
            payload = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
            meta = json.loads(payload["config"])
        except Exception as exc:  # noqa: BLE001 - any corruption is the same error to callers
            raise ValueError(f"not a saved GalaxyClassifier: {exc}") from exc
        if meta.get("format") != FORMAT:
            raise ValueError(f"unknown model format {meta.get('format')!r}, expected {FORMAT}")
        m = ModelConfig.from_dict(meta["model"])
        clf = cls(heads=m.heads, image_size=m.image_size, crop_fraction=meta["crop_fraction"],
                  output=m.output, channels=m.channels, embedding_dim=m.embedding_dim,
                  dropout=m.dropout, seed=meta["seed"], cache_dir=cache_dir,
                  mirror_swaps=dict(m.mirror_swaps))  # none in blobs saved before swaps existed
        clf.model.load_state_dict(payload["state_dict"])
        clf.history = list(meta.get("history", []))
        clf.calibration = dict(meta.get("calibration", {}))
        return clf
