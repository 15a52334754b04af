"""Agreement with pytorch-ood's detectors on the same arrays (theirs: higher = OOD).

Documented transforms: msp, maxlogit, energy, knn, vim: ours = -theirs;
mahalanobis with shrinkage=0: ours = -2 N theirs (N fit boxes; they invert the unnormalised
scatter matrix and halve the distance).
"""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.detections import Detections
from pipeline.filter.registry import create
from pipeline.filter.toy_boxes import ToyBoxWorld
from tests.helpers.filter_fixtures import WORLD

torch = pytest.importorskip("torch")
detector = pytest.importorskip("pytorch_ood.detector")

ONE_LEVEL = ToyBoxWorld(num_classes=4, feature_dim=32, num_levels=1, seed=0)


def _data(world: ToyBoxWorld = WORLD) -> tuple[Detections, Detections]:
    fit = world.id_boxes(3000, seed=1)
    test = Detections.merge([world.id_boxes(300, seed=3), world.ood_boxes(300, seed=4, mode="hidden"),
                          world.ood_boxes(300, seed=5, mode="far")])
    return fit, test


def _t(array: np.ndarray):
    return torch.from_numpy(np.ascontiguousarray(array))


@pytest.mark.parametrize("name,theirs", [
    ("msp", lambda z: detector.MaxSoftmax(None).predict_logits(z)),
    ("maxlogit", lambda z: detector.MaxLogit(None).predict_logits(z)),
    ("energy", lambda z: detector.EnergyBased(None).predict_logits(z)),
])
def test_logit_scores_equal_minus_theirs(name, theirs):
    fit, test = _data()
    ours = create(name).fit(fit).score(test)
    np.testing.assert_allclose(ours, -theirs(_t(test.logits)).double().numpy(), rtol=1e-5, atol=1e-7)


def test_temperature_matches_theirs():
    fit, test = _data()
    ours = create("energy", temperature=3.0).fit(fit).score(test)
    theirs = detector.EnergyBased(None, t=3.0).predict_logits(_t(test.logits)).double().numpy()
    np.testing.assert_allclose(ours, -theirs, rtol=1e-5)
    ours = create("msp", temperature=3.0).fit(fit).score(test)
    theirs = detector.MaxSoftmax(None, t=3.0).predict_logits(_t(test.logits)).double().numpy()
    np.testing.assert_allclose(ours, -theirs, rtol=1e-5)


def test_mahalanobis_equals_minus_2n_theirs_without_shrinkage():
    fit, test = _data()
    ours = create("mahalanobis", shrinkage=0.0).fit(fit).score(test)
    theirs = detector.Mahalanobis(None).fit_features(_t(fit.box_features), _t(fit.class_id))
    theirs = theirs.predict_features(_t(test.box_features)).double().numpy()
    np.testing.assert_allclose(ours, -2 * len(fit) * theirs, rtol=1e-5)


def test_vim_equals_minus_theirs_on_one_level():
    # One pyramid level, so one logit layer; dim at the eigengap of the toy features
    # (offset + class spread + rank-8 latent = 12 strong directions), where the subspace
    # is well defined in float32 (theirs) and float64 (ours) alike.
    fit, test = _data(ONE_LEVEL)
    ours = create("vim", dim=12).fit(fit).score(test)
    vim = detector.ViM(None, d=12, w=_t(ONE_LEVEL.weights[0]).float(), b=_t(ONE_LEVEL.biases[0]).float())
    vim.fit_features(_t(fit.box_features), _t(fit.class_id))
    theirs = vim.predict_features(_t(test.box_features)).double().numpy()
    np.testing.assert_allclose(ours, -theirs, rtol=1e-4, atol=1e-4 * np.abs(theirs).max())


def test_knn_equals_minus_theirs():
    pytest.importorskip("sklearn")  # pytorch-ood's KNN wraps sklearn's NearestNeighbors
    fit, test = _data()
    ours = create("knn", k=50).fit(fit).score(test)
    knn = detector.KNN(None, k=50).fit_features(_t(fit.box_features), _t(fit.class_id))
    theirs = knn.predict_features(_t(test.box_features)).double().numpy()
    np.testing.assert_allclose(ours, -theirs, rtol=1e-5, atol=1e-6)
