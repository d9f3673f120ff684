"""Shared pytest configuration: markers, a CPU-only default, and small shared fixtures."""

import os

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "2")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: longer than a few seconds; not run by CI (scripts/test.sh --slow runs it)")
    config.addinivalue_line("markers", "long: the demo, torchrun, kill -9, multi-step runs and tests over ~3 s; run "
                                       "by CI, left out of scripts/test.sh --fast")
    config.addinivalue_line("markers", "cuda: needs a CUDA device; skipped without one")


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="no CUDA device")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_gan_setup():
    """The function below, for module-scoped fixtures that build their own tiny GAN setup."""
    return make_tiny_gan_setup


def make_tiny_gan_setup(root, n_train=40, n_test=20):
    """In folder `root`: a 32 px toybirds dataset and a randomly initialised tiny DAMSM export on its vocabulary.

    Returns {"data", "damsm", "root"} (the GAN trainers' tests start from this)."""
    import json

    import torch

    from t2icli.data.toybirds import prepare_toybirds
    from t2icli.models.damsm import DAMSMConfig, build_damsm
    from t2icli.models.export import save_damsm

    data = root / "data"
    prepare_toybirds(str(data), size=32, n_train=n_train, n_test=n_test, captions_per_image=2, workers=1)
    vocab = json.loads((data / "vocab.json").read_text())
    torch.manual_seed(0)
    cfg = DAMSMConfig(vocab_size=len(vocab), image_size=32, small_width=4, hidden=16, embedding_dim=16)
    m = build_damsm(cfg)
    (root / "damsm").mkdir()
    save_damsm(str(root / "damsm"), m.text_encoder, m.image_encoder, cfg, vocab)
    return {"data": str(data), "damsm": str(root / "damsm"), "root": root}
