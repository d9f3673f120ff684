"""Data-FID: FID in the features of a network trained on the data set's own real images, with its real-vs-real floor."""

import numpy as np
import pytest

from t2icli.metrics.data_fid import data_fid, data_features, load_or_train_feature_network

pytestmark = pytest.mark.long  # trains a feature network: left out of scripts/test.sh --fast

STEPS = 150


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from t2icli.data.toybirds import prepare_toybirds

    path = str(tmp_path_factory.mktemp("dfid") / "data")
    prepare_toybirds(path, size=32, n_train=96, n_test=48, captions_per_image=1, workers=1)
    return path


def test_network_is_trained_once_and_cached(data):
    model, info = load_or_train_feature_network(data, steps=STEPS)
    assert not info["cached"] and info["targets"][-1] == "pose" and "body" in info["real_test_accuracy"]
    again, info2 = load_or_train_feature_network(data, steps=STEPS)
    assert info2["cached"] and info2["weights_sha256"] == info["weights_sha256"]
    x = np.zeros((3, 32, 32, 3), np.uint8)
    assert np.array_equal(data_features(model, x, 32), data_features(again, x, 32))
    assert data_features(model, x, 32).shape == (3, 256)
    _, other = load_or_train_feature_network(data, steps=STEPS + 1)  # another recipe: another network
    assert not other["cached"] and other["weights_sha256"] != info["weights_sha256"]


def test_fid_is_zero_for_the_reference_equals_its_floor_for_real_images_and_grows_for_noise(data):
    from t2icli.data import PreparedDataset

    real = np.array(PreparedDataset(data, "test", train=False).images_uint8)
    same = data_fid(real, data, steps=STEPS)
    assert same["value"] == pytest.approx(0.0, abs=1e-3)  # the reference itself
    assert same["backbone"] == "data" and same["n"] == same["n_real"] == 48 and same["floor"] > 0
    assert "floor" in same["protocol"] and same["network"]["recipe"]["blur_max"] == 0.0
    # The floor is what the real train images data_fid draws score; noise scores far above it. (Blur is judged at
    # the data set's scale, where the network learns: docs/RESULTS.md; 48 images in 256 dimensions cannot tell.)
    train = np.array(PreparedDataset(data, "train", train=False).images_uint8)
    idx = np.sort(np.random.default_rng([0, 0xF1D]).choice(len(train), size=len(real), replace=False))
    real_train = data_fid(train[idx], data, steps=STEPS)
    assert real_train["value"] == pytest.approx(real_train["floor"]) == pytest.approx(same["floor"])
    noise = data_fid(np.random.default_rng(0).integers(0, 256, real.shape, dtype=np.uint8), data, steps=STEPS)
    assert noise["value"] > 1.5 * same["floor"], (same["floor"], noise["value"])
    t = noise["terms"]  # the value's two terms, and the spreads: the reference's is the real images' own
    assert t["mean"] + t["covariance"] == noise["value"] and t["mean"] > 0 and t["covariance"] > 0
    assert t["spread_real"] == pytest.approx(same["terms"]["spread_real"])
    assert same["terms"]["spread_real"] == pytest.approx(same["terms"]["spread_generated"])
    assert noise["floor"] == pytest.approx(same["floor"])  # the floor depends on the images drawn (n, seed) only
