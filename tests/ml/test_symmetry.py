"""Chirality: heads with ``mirror_swaps`` are equivariant to reflections, the others invariant.

A mirror image swaps "clockwise" and "anticlockwise": these tests prove that the prediction for a
mirrored image is the swapped prediction (with test-time averaging, Monte Carlo dropout and
calibration), that training swaps the targets of the images it mirrors, that such a head learns
a chirality an invariant one cannot, and that the swaps are checked and stored.
"""

from __future__ import annotations

import importlib
import io
import json

import numpy as np
import pytest
import torch

from ml import GalaxyClassifier
from ml.augment import augment, augment_with_reflections, mirror_targets, random_dihedral_elements
from ml.losses import multi_head_loss
from ml.model import ModelConfig, dihedral
from ml.train import GalaxyDataset, train
from tests.ml.synthetic import spirals
from tests.ml.test_model import SMALL, rotate_uint8

# The modules themselves (``ml.train`` is also the name of the function that ``ml`` exports).
TRAIN_MODULE = importlib.import_module("ml.train")
PRETRAIN_MODULE = importlib.import_module("ml.pretrain")

SWAP = [0, 2, 1]  # edge-on, clockwise, anticlockwise: a reflection exchanges the last two
HEADS = [("spin", 3), ("edge_on", 2)]
SWAPS = {"spin": [(1, 2)]}


def chiral_targets(y: np.ndarray) -> dict[str, np.ndarray]:
    return {"spin": y, "edge_on": (y == 0).astype(np.int64)}


@pytest.fixture(scope="module")
def chiral() -> GalaxyClassifier:
    """Trained once on synthetic spirals; tests that change it work on a copy."""
    images, y = spirals(144, seed=0)
    clf = GalaxyClassifier(heads=HEADS, mirror_swaps=SWAPS, seed=0, **SMALL)
    clf.fit(images, chiral_targets(y), epochs=10, batch_size=16, lr=3e-3)
    return clf


def assert_equivariant(clf: GalaxyClassifier, images: np.ndarray) -> None:
    """Every D4 element: the swapping head's prediction moves with the image, the other stays."""
    base = clf.predict_proba(images)
    base_mc = clf.mc_predict(images, n_samples=4, seed=2)
    for k in range(1, 8):
        moved = rotate_uint8(images, k)
        spin = base["spin"][:, SWAP] if k >= 4 else base["spin"]
        probs = clf.predict_proba(moved)
        np.testing.assert_allclose(probs["spin"], spin, atol=1e-6)
        np.testing.assert_allclose(probs["edge_on"], base["edge_on"], atol=1e-6)
        mc = clf.mc_predict(moved, n_samples=4, seed=2)
        np.testing.assert_allclose(mc["spin"], base_mc["spin"][..., SWAP] if k >= 4 else base_mc["spin"], atol=1e-6)
        np.testing.assert_allclose(mc["edge_on"], base_mc["edge_on"], atol=1e-6)


def test_a_mirrored_image_gets_the_mirrored_prediction(chiral) -> None:
    images = spirals(12, seed=3)[0]
    assert_equivariant(chiral, images)
    # Not vacuous: the head does tell an image from its mirror image.
    mirrored = chiral.predict_proba(rotate_uint8(images, 4))["spin"]
    assert np.abs(mirrored - chiral.predict_proba(images)["spin"]).max() > 0.5
    # The embedding stays invariant: it describes a galaxy up to orientation and mirroring.
    np.testing.assert_allclose(chiral.embed(rotate_uint8(images, 5)), chiral.embed(images), atol=1e-5)


def test_equivariance_holds_after_calibration(chiral) -> None:
    clf = GalaxyClassifier.from_bytes(chiral.to_bytes())
    images, y = spirals(30, seed=4)
    wrong = np.where(y == 1, 2, y)  # a one-sided gold set: the bias it fits favours one direction
    fitted = clf.calibrate(images, {"spin": wrong, "edge_on": (y == 0).astype(np.int64)})
    assert abs(fitted["spin"]["bias"][1] - fitted["spin"]["bias"][2]) > 0.1
    assert_equivariant(clf, images[:8])


def test_cross_calibration_of_mirrored_gold_is_the_mirrored_calibration(chiral) -> None:
    """Mirrored gold images with swapped answers are the same evidence: the same fit, swapped
    out-of-fold probabilities. Without swapping the mirrored views in the fit they differ."""
    images, y = spirals(30, seed=5)
    folds = np.arange(30) % 3
    clf = GalaxyClassifier.from_bytes(chiral.to_bytes())
    out = clf.cross_calibrate(images, {"spin": y}, folds)["spin"]
    fitted = clf.calibration["spin"]
    mirrored = clf.cross_calibrate(rotate_uint8(images, 6), {"spin": np.array(SWAP)[y]}, folds)["spin"]
    np.testing.assert_allclose(mirrored, out[:, SWAP], atol=1e-4)
    assert clf.calibration["spin"]["scale"] == pytest.approx(fitted["scale"], rel=1e-4)
    np.testing.assert_allclose(clf.calibration["spin"]["bias"], fitted["bias"], atol=1e-4)


def test_a_chirality_question_is_learnt_only_with_swaps(chiral) -> None:
    images, y = spirals(144, seed=0)
    test, truth = spirals(60, seed=1)
    disk = truth > 0

    def direction_accuracy(clf: GalaxyClassifier) -> float:
        probs = clf.predict_proba(test)["spin"][disk]
        return float(np.mean(probs[:, 1:].argmax(1) + 1 == truth[disk]))

    assert direction_accuracy(chiral) >= 0.9
    invariant = GalaxyClassifier(heads=HEADS, seed=0, **SMALL)
    invariant.fit(images, chiral_targets(y), epochs=10, batch_size=16, lr=3e-3)
    # Invariant to mirroring, it gives a spiral and its mirror image one answer: chance at best.
    both = np.concatenate([test[disk], rotate_uint8(test[disk], 4)])
    probs = invariant.predict_proba(both)["spin"]
    np.testing.assert_allclose(probs[: disk.sum()], probs[disk.sum():], atol=1e-6)
    assert direction_accuracy(invariant) <= 0.6


def test_a_training_step_swaps_the_targets_of_the_images_it_mirrors(monkeypatch) -> None:
    images = spirals(24, seed=6)[0]
    rng = np.random.default_rng(0)
    soft = rng.dirichlet(np.ones(3), 24).astype(np.float32)  # distinct rows: each names its image
    other = rng.dirichlet(np.ones(2), 24).astype(np.float32)
    seen: list[tuple[torch.Tensor, dict[str, torch.Tensor]]] = []
    reflections: list[torch.Tensor] = []

    def spy_augment(x: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        out, reflected = augment_with_reflections(x, gen)
        reflections.append(reflected)
        return out, reflected

    def spy_loss(logits: dict, targets: dict, output: str) -> torch.Tensor:
        seen.append((reflections[-1], {k: v.clone() for k, v in targets.items()}))
        return multi_head_loss(logits, targets, output)

    monkeypatch.setattr(TRAIN_MODULE, "augment_with_reflections", spy_augment)
    monkeypatch.setattr(TRAIN_MODULE, "multi_head_loss", spy_loss)
    clf = GalaxyClassifier(heads=HEADS, mirror_swaps=SWAPS, seed=0, **SMALL)
    train(clf.model, GalaxyDataset(images, {"spin": soft, "edge_on": other}, clf.heads), epochs=2, batch_size=8)
    assert len(seen) == 6
    n_mirrored = 0
    for reflected, targets in seen:
        for row, spin, edge in zip(reflected.tolist(), targets["spin"].numpy(), targets["edge_on"].numpy(), strict=True):
            i = int(np.argmin(np.abs(other - edge).sum(1)))  # the image this row is for
            np.testing.assert_array_equal(edge, other[i])  # not a swapping head: as given
            np.testing.assert_array_equal(spin, soft[i][SWAP] if row else soft[i])
            n_mirrored += row
    assert 0 < n_mirrored < 48


def test_mirror_targets_swaps_mirrored_rows_and_keeps_missing_ones_missing() -> None:
    counts = torch.tensor([[1.0, 5.0, 2.0], [3.0, 0.0, 7.0], [float("nan")] * 3, [0.0, 0.0, 0.0]])
    other = torch.ones(4, 2)
    reflected = torch.tensor([True, False, True, True])
    out = mirror_targets({"spin": counts, "edge_on": other}, reflected, {"spin": SWAP})
    expected = torch.tensor([[1.0, 2.0, 5.0], [3.0, 0.0, 7.0], [float("nan")] * 3, [0.0, 0.0, 0.0]])
    assert torch.equal(out["spin"].nan_to_num(-1), expected.nan_to_num(-1))
    assert out["edge_on"] is other
    assert counts[0, 1] == 5.0  # the caller's tensor is left alone


def test_augmentation_says_which_images_it_mirrored() -> None:
    x = torch.rand(32, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    out, ks = random_dihedral_elements(x, torch.Generator().manual_seed(1))
    for i in range(32):
        assert torch.equal(out[i], dihedral(x[i], int(ks[i])))
    augmented, reflected = augment_with_reflections(x, torch.Generator().manual_seed(1))
    assert torch.equal(reflected, ks >= 4) and 0 < int(reflected.sum()) < 32
    # The same random stream as before: seeded runs without swaps are unchanged.
    assert torch.equal(augmented, augment(x, torch.Generator().manual_seed(1)))
    forced = torch.arange(32) % 3 == 0
    assert torch.equal(random_dihedral_elements(x, torch.Generator(), reflect=forced)[1] >= 4, forced)


@pytest.mark.parametrize("swaps", [SWAPS, None])
def test_pretraining_mirrors_both_views_alike_only_for_chirality(monkeypatch, swaps) -> None:
    calls: list[torch.Tensor | None] = []
    real = PRETRAIN_MODULE.contrastive_augment

    def spy(x: torch.Tensor, gen: torch.Generator, reflect: torch.Tensor | None = None) -> torch.Tensor:
        calls.append(reflect)
        return real(x, gen, reflect)

    monkeypatch.setattr(PRETRAIN_MODULE, "contrastive_augment", spy)
    clf = GalaxyClassifier(heads=HEADS, mirror_swaps=swaps, seed=0, **SMALL)
    clf.pretrain(spirals(8, seed=7)[0], epochs=1, batch_size=8)
    assert len(calls) == 2
    if swaps is None:
        assert calls == [None, None]
    else:
        assert calls[0] is calls[1] and calls[0].dtype == torch.bool


def test_serialisation_keeps_the_swaps_and_old_blobs_load_without(chiral) -> None:
    images = spirals(6, seed=8)[0]
    restored = GalaxyClassifier.from_bytes(chiral.to_bytes())
    assert restored.mirror_swaps == {"spin": ((1, 2),)} and restored.config == chiral.config
    np.testing.assert_array_equal(restored.predict_proba(images)["spin"], chiral.predict_proba(images)["spin"])
    # A blob saved before swaps existed has no "mirror_swaps": it loads as invariant heads.
    payload = torch.load(io.BytesIO(chiral.to_bytes()), weights_only=True)
    meta = json.loads(payload["config"])
    del meta["model"]["mirror_swaps"]
    buf = io.BytesIO()
    torch.save({"config": json.dumps(meta), "state_dict": payload["state_dict"]}, buf)
    old = GalaxyClassifier.from_bytes(buf.getvalue())
    assert old.mirror_swaps == {}
    probs = old.predict_proba(images)["spin"]
    np.testing.assert_allclose(old.predict_proba(rotate_uint8(images, 4))["spin"], probs, atol=1e-6)


@pytest.mark.parametrize(("swaps", "message"), [
    ({"spin": [(1, 1)]}, "two different answers"),
    ({"spin": [(1, 3)]}, r"answers in 0\.\.2"),
    ({"spin": [(-1, 2)]}, r"answers in 0\.\.2"),
    ({"spin": [(0, 1), (1, 2)]}, "answer 1 is in two pairs"),
    ({"spin": [(1, 2, 0)]}, "not a pair"),
    ({"spin": [1, 2]}, "not a pair"),
    ({"spin": [(True, 2)]}, "integer answer indices"),
    ({"spin": [(1.0, 2)]}, "integer answer indices"),
    ({"spin": "12"}, "list of"),
    ({"colour": [(0, 1)]}, "no head 'colour'"),
    (5, "map question keys"),
])
def test_bad_swaps_are_refused_with_the_reason(swaps, message) -> None:
    with pytest.raises(ValueError, match=message):
        GalaxyClassifier(heads=HEADS, mirror_swaps=swaps, **SMALL)


def test_swaps_are_stored_in_one_order_and_empty_ones_dropped() -> None:
    a = ModelConfig(heads=tuple(HEADS), mirror_swaps={"spin": [[2, 1]], "edge_on": []})
    b = ModelConfig(heads=tuple(HEADS), mirror_swaps=(("spin", ((1, 2),)),))
    assert a == b and a.mirror_swaps == (("spin", ((1, 2),)),)
    assert a.mirror_permutation("spin") == SWAP and a.mirror_permutation("edge_on") is None
    assert ModelConfig.from_dict(a.to_dict()) == a
