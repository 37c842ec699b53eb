"""Calibration of a head against known answers: recovers a known skew, survives storage, and is
forgotten when the weights change."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from ml import GalaxyClassifier, metrics
from ml.calibration import apply_vector_scaling, fit_vector_scaling
from tests.ml.synthetic import blobs

SMALL = {"image_size": 32, "channels": (8, 16, 32, 32), "embedding_dim": 32}


def skewed(n: int, seed: int) -> tuple[torch.Tensor, np.ndarray]:
    """Logits ``[0, z]`` of a model whose truth is P(y = 1) = sigmoid(2 z - 1): under-confident and
    skewed towards class 1, as a CNN fitted to a crowd that over-calls "featured" would be."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, 2.0, n)
    y = (rng.random(n) < 1 / (1 + np.exp(-(2 * z - 1)))).astype(np.int64)
    logits = torch.tensor(np.stack([np.zeros(n), z], axis=1))[None]  # one view: (1, N, 2)
    return logits, y


def test_vector_scaling_recovers_a_known_scale_and_skew() -> None:
    logits, y = skewed(4000, seed=0)
    scale, bias = fit_vector_scaling(logits, y)
    assert scale == pytest.approx(2.0, abs=0.25) and bias[1] - bias[0] == pytest.approx(-1.0, abs=0.25)
    assert sum(bias) == pytest.approx(0.0, abs=1e-9)
    # On new subjects from the same model, calibrated probabilities have a lower log loss and ECE.
    test_logits, test_y = skewed(4000, seed=1)
    raw = torch.softmax(test_logits[0], -1).numpy()
    fixed = torch.softmax(apply_vector_scaling(test_logits[0], scale, bias), -1).numpy()
    assert metrics.log_loss(fixed, test_y) < metrics.log_loss(raw, test_y) - 0.02
    assert metrics.ece(fixed, test_y) < 0.5 * metrics.ece(raw, test_y)


def test_vector_scaling_stays_finite_on_one_sided_or_bad_input() -> None:
    logits = torch.randn(1, 12, 2, generator=torch.Generator().manual_seed(0))
    scale, bias = fit_vector_scaling(logits, np.zeros(12, dtype=np.int64))  # every answer the same
    assert np.isfinite(scale) and np.all(np.isfinite(bias)) and abs(bias[0] - bias[1]) < 10
    with pytest.raises(ValueError, match="labels must be in"):
        fit_vector_scaling(logits, np.full(12, 2))
    with pytest.raises(ValueError, match=r"\(T, N, K\)"):
        fit_vector_scaling(logits[0], np.zeros(12, dtype=np.int64))


def test_classifier_calibration_changes_predictions_is_stored_and_is_reset_by_training() -> None:
    images, y = blobs(48)
    clf = GalaxyClassifier(heads=[("shape", 2)], seed=1, **SMALL)
    clf.fit(images, y, epochs=2, batch_size=16)
    raw = clf.predict_proba(images, tta=False)["shape"]
    # Answers that contradict the CNN half the time: calibration must make it less sure.
    flip = np.random.default_rng(0).permutation(len(y)) < len(y) // 2
    answers = np.where(flip, 1 - y, y)
    fitted = clf.calibrate(images, {"shape": answers}, tta=False)
    assert fitted["shape"]["n"] == len(y) and fitted["shape"]["scale"] < 1.0
    calibrated = clf.predict_proba(images, tta=False)["shape"]
    assert np.abs(calibrated - 0.5).mean() < np.abs(raw - 0.5).mean()
    assert clf.mc_predict(images, n_samples=3, tta=False)["shape"].mean(0) == pytest.approx(calibrated, abs=0.15)

    restored = GalaxyClassifier.from_bytes(clf.to_bytes())
    assert restored.calibration == clf.calibration
    np.testing.assert_allclose(restored.predict_proba(images, tta=False)["shape"], calibrated, atol=1e-6)

    warm = copy.deepcopy(clf)
    warm.partial_fit(images, y, epochs=1, batch_size=16)
    assert warm.calibration == {}  # new weights: the old calibration no longer applies

    with pytest.raises(ValueError, match="no head named"):
        clf.calibrate(images, {"colour": y})
    votes = GalaxyClassifier(heads=[("shape", 2)], output="dirichlet", **SMALL)
    with pytest.raises(ValueError, match="softmax"):
        votes.calibrate(images, {"shape": y})


def test_cross_calibration_measures_each_fold_with_a_calibration_it_did_not_fit() -> None:
    images, y = blobs(48)
    clf = GalaxyClassifier(heads=[("shape", 2)], seed=1, **SMALL)
    clf.fit(images, y, epochs=2, batch_size=16)
    answers = np.where(np.arange(len(y)) % 3 == 0, 1 - y, y)  # a third contradict the CNN
    folds = np.arange(len(y)) % 2
    out_of_fold = clf.cross_calibrate(images, {"shape": answers}, folds, tta=False)["shape"]
    # What serves is the calibration on every answer ...
    on_all = copy.deepcopy(clf)
    on_all.calibrate(images, {"shape": answers}, tta=False)
    assert clf.calibration == on_all.calibration
    # ... and each fold's probabilities are those of a calibration fitted on the other fold alone.
    for fold in (0, 1):
        other = copy.deepcopy(clf)
        other.calibrate(images[folds != fold], {"shape": answers[folds != fold]}, tta=False)
        np.testing.assert_allclose(out_of_fold[folds == fold], other.predict_proba(images[folds == fold], tta=False)["shape"], atol=1e-5)
        assert not np.allclose(out_of_fold[folds == fold], clf.predict_proba(images[folds == fold], tta=False)["shape"], atol=1e-3)
    with pytest.raises(ValueError, match="two folds"):
        clf.cross_calibrate(images, {"shape": answers}, np.zeros(len(y)), tta=False)
