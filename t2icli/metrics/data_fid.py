"""FID in the features of a network trained on the data set's own real train images: realism with nothing to download.

Where no Inception-v3 can be downloaded (toybirds; any machine without internet), `t2i eval --metric fid
--fid-backbone data` measures the Frechet distance between generated images and the real test split in the 256-d
penultimate features of a small CNN (the attribute classifier's architecture, metrics/attributes.py) trained once on
the real train split to predict what the data set knows of each image: the eight attributes and the pose of a toybird
(standardised, squared error), the class of any other data set. Unlike the attribute classifier it is trained without
flips, blur or noise, so its features see the shapes, their placement and how sharp they are, not only the colours:
blobs with a bird's colours but no head, beak or legs lie far from the real birds in this space.

The distance is reported with its floor: the same distance from as many real TRAIN images as were generated (drawn
with the seed) to the same reference, i.e. what a generator of perfect samples scores at that sample count. The
network is cached in DATA/cache/data_fid.pt, keyed by the training arrays' hashes and the recipe; the JSON names the
recipe, the network's own real-test accuracy and the hash of its weights.
"""

import hashlib
import os
import time

import numpy as np
import torch

from t2icli.metrics.common import MetricError, file_sha256, sha256_of

__all__ = ["RECIPE", "CACHE_NAME", "PROTOCOL", "load_or_train_feature_network", "data_features", "data_fid"]

CACHE_NAME = "data_fid.pt"
_FORMAT = "t2i-data-fid"
#: The fixed training recipe (part of the cache key): the attribute classifier's, without flips, blur or noise.
RECIPE = {"steps": 1500, "batch_size": 64, "lr": 3e-3, "width": 32, "flip": False, "blur_max": 0.0,
          "noise_max": 0.0, "regress_weight": 1.0, "version": 1}
PROTOCOL = ("Frechet distance between the generated images and the real test split in the 256-d penultimate features "
            "of a CNN trained on the data set's real train images (toybirds: its 8 attributes and pose; otherwise its "
            "class), without flips, blur or noise; floor: the distance from as many real train images (drawn with the "
            "seed) to the same reference")


def _array_sha256(a):
    a = np.ascontiguousarray(a)
    return hashlib.sha256(str((a.dtype.str, a.shape)).encode() + a.tobytes()).hexdigest()


def _targets(data, meta, split):
    """(dataset, names, num_values, int truth [n, A], standardised pose [n, P] or None) of a split."""
    from t2icli.data import PreparedDataset

    ds = PreparedDataset(data, split, train=False)
    if meta.get("attributes"):
        truth = np.asarray(ds.attributes, dtype=np.int64)
        names, num_values = [a["name"] for a in meta["attributes"]], [len(a["values"]) for a in meta["attributes"]]
    else:
        truth = np.asarray(ds.class_ids, dtype=np.int64)[:, None]
        names, num_values = ["class"], [int(meta.get("n_classes") or truth.max() + 1)]
    pose_path = os.path.join(data, split, "pose.npy")
    pose = np.load(pose_path).astype(np.float32) if os.path.isfile(pose_path) else None
    return ds, names, num_values, truth, pose


def load_or_train_feature_network(data, device="cpu", log=None, steps=None):
    """The feature network of prepared dataset `data`: loaded from DATA/cache/data_fid.pt when its key matches, else
    trained on the real train split, scored on the real test split and cached. steps overrides RECIPE["steps"].
    Returns (model in eval mode, info {"size", "targets", "recipe", "real_test_accuracy", "weights_sha256", "path",
    "cached"})."""
    from t2icli.data import load_meta
    from t2icli.metrics.attributes import (AttributeClassifier, load_cached_network, predict_attributes,
                                           save_cached_network, train_attribute_classifier)

    data = os.fspath(data)
    meta = load_meta(data)
    recipe = dict(RECIPE, **({"steps": int(steps)} if steps else {}))
    size = int(meta["image_size"])
    train, names, num_values, truth, pose = _targets(data, meta, "train")
    n_pose = 0 if pose is None else int(pose.shape[1])
    key = sha256_of(file_sha256(os.path.join(data, "train", "images.npy")), _array_sha256(truth),
                    "none" if pose is None else _array_sha256(pose), sorted(recipe.items()), num_values)
    path = os.path.join(data, "cache", CACHE_NAME)
    cached = load_cached_network(path, _FORMAT, key, lambda: AttributeClassifier(num_values, recipe["width"],
                                                                                   max(1, size // 32), n_pose), device)
    if cached is not None:
        return cached
    if log:
        log(f"data-FID network: training on {len(train)} real train images ({recipe['steps']} steps, cached in {path})")
    t0 = time.perf_counter()
    regress = None if pose is None else (pose - pose.mean(0)) / np.maximum(pose.std(0), 1e-6)
    model = train_attribute_classifier(train.images_uint8, truth, num_values, size, recipe, device, log=log,
                                       regress=regress)
    test_split = "test" if "test" in meta["splits"] else "train"
    test, _, _, test_truth, _ = _targets(data, meta, test_split)
    pred = predict_attributes(model, test.images_uint8, size, device=device)
    accuracy = {name: float((pred[:, k] == test_truth[:, k]).mean()) for k, name in enumerate(names)}
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    info = {"size": size, "targets": names + (["pose"] if n_pose else []), "recipe": recipe,
            "real_test_accuracy": accuracy, "train_seconds": round(time.perf_counter() - t0, 1),
            "weights_sha256": sha256_of(*[_array_sha256(state[k].numpy()) for k in sorted(state)])}
    if log:
        log(f"data-FID network: real {test_split} accuracy " + ", ".join(f"{k} {v:.3f}" for k, v in accuracy.items()))
    save_cached_network(path, _FORMAT, key, model, info)
    return model, dict(info, path=path, cached=False)


@torch.no_grad()
def data_features(model, images_uint8, size, batch_size=256, device="cpu"):
    """The network's penultimate features (float64 numpy [n, 256]) of uint8 images [n, S, S, 3]."""
    from t2icli.metrics.attributes import _to_input

    model.eval()
    out = [model.features(_to_input(np.asarray(images_uint8[s : s + batch_size]), size, device)).double().cpu()
           for s in range(0, len(images_uint8), batch_size)]
    return torch.cat(out).numpy()


def data_fid(images, data, split="test", seed=0, device="cpu", log=None, steps=None):
    """FID of generated uint8 images [n, S, S, 3] against the real `split` of prepared dataset `data` in its own
    feature space, with the floor of n real train images. Returns the JSON-able dict (the protocol included)."""
    from t2icli.data import PreparedDataset
    from t2icli.metrics.fid import feature_stats, fid_terms, frechet_distance

    n = len(images)
    if n < 2:
        raise MetricError(f"--metric fid needs at least 2 generated images, got {n} (--n-samples)")
    model, info = load_or_train_feature_network(data, device, log, steps)
    size = info["size"]
    real, train = PreparedDataset(data, split, train=False), PreparedDataset(data, "train", train=False)
    mu_r, sigma_r = feature_stats(data_features(model, real.images_uint8, size, device=device))
    mu_g, sigma_g = feature_stats(data_features(model, images, size, device=device))
    idx = np.sort(np.random.default_rng([int(seed), 0xF1D]).choice(len(train), size=n, replace=n > len(train)))
    mu_t, sigma_t = feature_stats(data_features(model, train.images_uint8[idx], size, device=device))
    terms = fid_terms(mu_g, sigma_g, mu_r, sigma_r)
    return {"metric": "fid", "backbone": "data", "value": terms["mean"] + terms["covariance"], "terms": terms,
            "floor": float(frechet_distance(mu_t, sigma_t, mu_r, sigma_r)), "n": n, "n_real": len(real),
            "split": split, "seed": int(seed), "feature_dim": int(mu_g.shape[0]), "protocol": PROTOCOL,
            "network": dict({k: info[k] for k in ("targets", "recipe", "real_test_accuracy", "weights_sha256", "path",
                                                  "cached")}, shipped=bool(info.get("shipped")))}
