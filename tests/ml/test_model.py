"""The CNN's symmetry, heads, storage and training behaviour on tiny synthetic data."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ml import GalaxyClassifier, dihedral
from ml.train import GalaxyDataset, train
from tests.ml.synthetic import blobs

SMALL = {"image_size": 32, "channels": (8, 16, 32, 32), "embedding_dim": 32}


def rotate_uint8(images: np.ndarray, k: int) -> np.ndarray:
    """D4 element k applied to uint8 (N, H, W, 3) images, through the same ``dihedral``."""
    t = torch.from_numpy(images).permute(0, 3, 1, 2)
    return np.ascontiguousarray(dihedral(t, k).permute(0, 2, 3, 1).numpy())


@pytest.fixture(scope="module")
def trained() -> GalaxyClassifier:
    """Trained once for the module; tests that train further work on a copy."""
    images, y = blobs(48)
    clf = GalaxyClassifier(heads=[("shape", 2)], seed=1, **SMALL)
    clf.fit(images, y, epochs=2, batch_size=16)
    return clf


def test_tta_prediction_is_invariant_to_rotations_and_flips(trained, blob_data) -> None:
    images = blob_data[0][:6]
    base = trained.predict_proba(images, tta=True)["shape"]
    base_embedding = trained.embed(images)
    base_mc = trained.mc_predict(images, n_samples=5, seed=3)["shape"]
    no_tta_differs = False
    for k in range(1, 8):
        moved = rotate_uint8(images, k)
        np.testing.assert_allclose(trained.predict_proba(moved)["shape"], base, atol=1e-5)
        np.testing.assert_allclose(trained.embed(moved), base_embedding, atol=1e-4)
        np.testing.assert_allclose(trained.mc_predict(moved, 5, seed=3)["shape"], base_mc,
                                   atol=1e-5)
        one = trained.predict_proba(moved, tta=False)["shape"]
        no_tta_differs |= not np.allclose(one, trained.predict_proba(images, tta=False)["shape"],
                                          atol=1e-5)
    # Without averaging the network is not invariant, so the check above is not vacuous.
    assert no_tta_differs


def test_dihedral_elements_form_the_group() -> None:
    x = torch.arange(16.0).view(1, 4, 4)
    images = {tuple(dihedral(x, k).flatten().tolist()) for k in range(8)}
    assert len(images) == 8
    for k in range(8):  # closed under composition with a quarter turn
        assert tuple(dihedral(dihedral(x, k), 1).flatten().tolist()) in images


def test_training_separates_a_tiny_synthetic_set(blob_data) -> None:
    images, y = blob_data
    clf = GalaxyClassifier(heads=[("shape", 2)], seed=0, **SMALL)
    metrics = clf.fit(images, y, epochs=12, batch_size=16, lr=3e-3)
    losses = [row["train_loss"] for row in metrics["epochs"]]
    assert losses[-1] < 0.5 * losses[0]
    probs = clf.predict_proba(images)["shape"]
    assert np.allclose(probs.sum(1), 1.0, atol=1e-5)
    assert np.mean(probs.argmax(1) == y) >= 0.9


def test_training_is_deterministic_for_a_seed(blob_data) -> None:
    images, y = blob_data
    states = []
    for _ in range(2):
        clf = GalaxyClassifier(heads=[("shape", 2)], seed=5, **SMALL)
        clf.fit(images[:24], y[:24], epochs=2, batch_size=8)
        states.append(clf.model.state_dict())
    for key in states[0]:
        assert torch.equal(states[0][key], states[1][key]), key
    other = GalaxyClassifier(heads=[("shape", 2)], seed=6, **SMALL)
    assert not torch.equal(other.model.heads["shape"].weight, states[0]["heads.shape.weight"])


def test_min_steps_adds_epochs_only_where_the_data_are_few(blob_data) -> None:
    images, y = blob_data
    clf = GalaxyClassifier(heads=[("shape", 2)], seed=0, **SMALL)
    few = clf.fit(images[:24], y[:24], epochs=1, batch_size=8, min_steps=10)  # 3 steps an epoch
    assert len(few["epochs"]) == 4
    many = clf.fit(images[:24], y[:24], epochs=5, batch_size=8, min_steps=10)  # 15 steps already
    assert len(many["epochs"]) == 5
    warm = clf.partial_fit(images[:16], y[:16], epochs=1, batch_size=8, min_steps=7)
    assert len(warm["epochs"]) == 4
    with pytest.raises(ValueError, match="min_steps"):
        clf.fit(images[:24], y[:24], epochs=1, min_steps=-1)


def test_on_step_is_called_after_every_optimiser_step_of_fit_and_partial_fit(blob_data) -> None:
    """What a training run's heartbeat rides on: called at every step, so at least once an epoch."""
    images, y = blob_data
    clf = GalaxyClassifier(heads=[("shape", 2)], seed=0, **SMALL)
    steps: list[int] = []
    epochs: list[dict] = []
    metrics = clf.fit(images[:24], y[:24], epochs=2, batch_size=8, on_step=steps.append, log=epochs.append)
    assert steps == list(range(1, 7))  # 3 batches an epoch, 2 epochs
    assert len(epochs) == len(metrics["epochs"]) == 2
    steps.clear()
    # 17 subjects: batches of 8, 8 and 1 (min_steps 5 makes that 2 epochs); the single one is
    # skipped (BatchNorm), no step: 2 steps an epoch.
    warm = clf.partial_fit(images[:17], y[:17], epochs=1, batch_size=8, min_steps=5, on_step=steps.append)
    assert len(warm["epochs"]) == 2 and steps == list(range(1, 5))


def test_save_load_round_trip_gives_identical_predictions(trained, blob_data) -> None:
    images = blob_data[0][:8]
    blob = trained.to_bytes()
    assert isinstance(blob, bytes)
    restored = GalaxyClassifier.from_bytes(blob)
    assert restored.heads == trained.heads and restored.config == trained.config
    np.testing.assert_array_equal(restored.predict_proba(images)["shape"],
                                  trained.predict_proba(images)["shape"])
    np.testing.assert_array_equal(restored.mc_predict(images, 4)["shape"],
                                  trained.mc_predict(images, 4)["shape"])
    np.testing.assert_array_equal(restored.embed(images), trained.embed(images))


def test_from_bytes_rejects_garbage() -> None:
    with pytest.raises(ValueError, match="not a saved GalaxyClassifier"):
        GalaxyClassifier.from_bytes(b"not a model")


def test_partial_fit_starts_from_the_current_weights(trained, blob_data) -> None:
    images, y = blob_data
    trained = GalaxyClassifier.from_bytes(trained.to_bytes())
    before = {k: v.clone() for k, v in trained.model.state_dict().items()}
    trained.partial_fit(images[:16], y[:16], epochs=1, lr=1e-4, batch_size=16)
    after = trained.model.state_dict()
    # One small step moves the weights a little: warm start, not re-initialisation.
    w0, w1 = before["trunk.0.0.weight"], after["trunk.0.0.weight"]
    assert not torch.equal(w0, w1)
    assert (w1 - w0).abs().max() < 0.01 * w0.abs().max()
    assert len(trained.history) == 2


def test_warm_start_keeps_the_trunk_when_a_head_is_added(trained, blob_data) -> None:
    images, y = blob_data
    bigger = GalaxyClassifier(heads=[("shape", 2), ("arms", 3)], seed=9, **SMALL)
    data = GalaxyDataset(images, {"shape": y}, bigger.heads)
    train(bigger.model, data, epochs=0, warm_start_state=trained.model.state_dict())
    assert torch.equal(bigger.model.trunk[0][0].weight, trained.model.trunk[0][0].weight)
    assert torch.equal(bigger.model.heads["shape"].weight, trained.model.heads["shape"].weight)


def test_masked_head_gets_no_gradient(blob_data) -> None:
    images, y = blob_data
    clf = GalaxyClassifier(heads=[("shape", 2), ("arms", 3)], seed=0, **SMALL)
    arms = np.full((len(y), 3), np.nan, dtype=np.float32)  # never asked
    before = clf.model.heads["arms"].weight.detach().clone()
    clf.fit(images[:16], {"shape": y[:16], "arms": arms[:16]}, epochs=1, batch_size=8,
            weight_decay=0.0)
    assert torch.equal(clf.model.heads["arms"].weight, before)
    assert not torch.equal(clf.model.heads["shape"].weight,
                           GalaxyClassifier(heads=clf.heads, seed=0, **SMALL)
                           .model.heads["shape"].weight)
    probs = clf.predict_proba(images[:4])
    assert probs["shape"].shape == (4, 2) and probs["arms"].shape == (4, 3)


def test_dirichlet_output_trains_on_vote_counts(blob_data) -> None:
    images, y = blob_data
    rng = np.random.default_rng(0)
    total = rng.integers(5, 40, len(y))
    featured = rng.binomial(total, np.where(y == 1, 0.9, 0.1))
    counts = np.stack([total - featured, featured], axis=1).astype(np.float32)
    clf = GalaxyClassifier(heads=[("shape", 2)], output="dirichlet", seed=0, **SMALL)
    metrics = clf.fit(images, {"shape": counts}, epochs=8, batch_size=16, lr=3e-3)
    losses = [row["train_loss"] for row in metrics["epochs"]]
    assert losses[-1] < losses[0]
    probs = clf.predict_proba(images)["shape"]
    assert np.allclose(probs.sum(1), 1.0, atol=1e-5)
    assert np.mean(probs.argmax(1) == y) >= 0.8


def test_bad_targets_and_images_are_rejected(blob_data) -> None:
    images, y = blob_data
    clf = GalaxyClassifier(heads=[("shape", 2)], **SMALL)
    with pytest.raises(ValueError, match="shape"):
        clf.fit(images, {"shape": np.zeros((3, 2))}, epochs=1)
    with pytest.raises(ValueError, match="unknown question"):
        clf.fit(images, {"colour": y}, epochs=1)
    with pytest.raises(ValueError, match="-1..1"):
        clf.fit(images, np.full(len(y), 2), epochs=1)
    with pytest.raises(ValueError, match="uint8"):
        clf.predict_proba(images.astype(np.float32))
    with pytest.raises(ValueError, match="at least 2 answers"):
        GalaxyClassifier(heads=[("shape", 1)])
