"""`t2i train KIND --dry-run`: build a run's networks at its resolved settings and count their parameters, without
training, reading more than the inputs' configurations, or writing anything.

The sizes a run takes from its inputs come from them when given (--data: image size and vocabulary; --damsm: the
text feature's size and the DAMSM encoders; --text-embeddings: the char-CNN-RNN feature's size), else from the
--preset's stand-ins (PRESETS[kind][preset]["stand_in"]: the paper's image size, the vocabulary size of AttnGAN's
released captions.pickle, the text feature's size and source), so `--preset cub-paper --dry-run` can be compared with
the reference's parameter counts before a 600-epoch run. The networks are built on the meta device: no memory, no
time, no initialisation.
"""

from t2icli.errors import ConfigError

__all__ = ["dry_run"]


def dry_run(cfg):
    """The dry run of config `cfg` (a TrainConfig): {"kind", "dry_run": True, "config" (every field), "inputs" (where
    the image size, vocabulary and text features come from), "model" (the generator's or DAMSM's model config),
    "sizes" (the training images' sides), "parameters" {network: count}} (+ "trainable" for the DAMSM). Raises
    ConfigError naming what is missing (--data, --damsm) or impossible (a model config that cannot be built)."""
    from t2icli.models.config import ModelConfigError
    from t2icli.training.config import preset_values

    cfg.validate(dry_run=True)
    stand_in = preset_values(cfg.kind, cfg.preset).get("stand_in", {}) if cfg.preset else {}
    try:
        out = _damsm(cfg, stand_in) if cfg.kind == "damsm" else _gan(cfg, stand_in)
    except ModelConfigError as exc:
        raise ConfigError(f"--dry-run: {exc}") from None
    return dict({"kind": cfg.kind, "dry_run": True, "config": cfg.to_dict()}, **out)


def _needs(what, flag, cfg):
    papers = [p for p in ("cub-paper", "coco-paper") if p != cfg.preset]
    return ConfigError(f"--dry-run needs {flag} ({what}), or a paper preset (--preset {'|'.join(papers)}) whose "
                       "stand-ins are the paper's")


def _data(cfg, stand_in):
    """(image size, vocabulary size, where from) of --data, or of the preset's stand-ins (None where it has none)."""
    if cfg.data is not None:
        from t2icli.data import load_meta
        from t2icli.training.damsm import meta_vocab

        meta = load_meta(cfg.data)
        return int(meta["image_size"]), len(meta_vocab(cfg.data)), int(meta["word_limit"]), "--data"
    return stand_in.get("image_size"), stand_in.get("vocab_size"), None, f"--preset {cfg.preset}"


def _damsm(cfg, stand_in):
    from t2icli.training.damsm import model_config, network_counts

    image_size, vocab_size, word_limit, source = _data(cfg, stand_in)
    if vocab_size is None:
        raise _needs("the vocabulary size", "--data", cfg)
    if image_size is None and cfg.image_encoder == "small":
        raise _needs("the image size the small encoder is built for", "--data", cfg)
    mcfg = model_config(cfg, vocab_size, word_limit or 18, image_size or 299)
    counts, trainable = network_counts(mcfg)
    return {"inputs": {"vocab_size": vocab_size, "image_size": image_size, "from": source},
            "model": mcfg.to_dict(), "sizes": [mcfg.image_size], "parameters": counts, "trainable": trainable}


def _gan(cfg, stand_in):
    from importlib import import_module

    from t2icli.training import damsm as damsm_trainer

    image_size, vocab_size, _, data_source = _data(cfg, stand_in)
    if image_size is None:
        raise _needs("the image size", "--data", cfg)
    counts, damsm_cfg = {}, None
    if getattr(cfg, "text_embeddings", None) is not None:
        from t2icli.data.embeddings import load_char_cnn_rnn

        text_dim, text_source, text_from = int(load_char_cnn_rnn(cfg.text_embeddings).shape[2]), "char-cnn-rnn", \
            "--text-embeddings"
    elif cfg.damsm is not None:
        from t2icli.models.damsm import DAMSMConfig
        from t2icli.models.export import ExportError, read_damsm

        try:
            damsm_cfg = DAMSMConfig.from_dict(read_damsm(cfg.damsm)["config"])
        except ExportError as exc:
            raise ConfigError(f"--damsm: {exc}") from None
        text_dim, text_source, text_from = damsm_cfg.dim, "damsm", "--damsm"
    elif "text_dim" in stand_in:
        text_dim, text_source, text_from = int(stand_in["text_dim"]), stand_in["text_source"], f"--preset {cfg.preset}"
        if text_source == "damsm":  # the paper's DAMSM: Inception-v3 on the stand-in vocabulary
            from t2icli.training.config import DAMSMTrainConfig

            dcfg = DAMSMTrainConfig(image_encoder=stand_in.get("image_encoder", "inception_v3"))
            damsm_cfg = damsm_trainer.model_config(dcfg, vocab_size, 18, 299)
    else:
        raise _needs("the text encoder and its feature size", "--damsm", cfg)
    module = import_module(f"t2icli.training.{'attngan' if cfg.kind == 'stackgan2' else cfg.kind}")
    mcfg = module.model_config(cfg, image_size, text_dim)
    counts.update(module.network_counts(cfg, mcfg))
    if damsm_cfg is not None:  # the frozen DAMSM encoders the run conditions on and scores with
        counts.update(damsm_trainer.network_counts(damsm_cfg)[0])
    inputs = {"image_size": image_size, "from": data_source,
              "text": {"source": text_source, "dim": text_dim, "from": text_from}}
    if damsm_cfg is not None:
        inputs["text"]["vocab_size"] = damsm_cfg.vocab_size
    return {"inputs": inputs, "model": mcfg.to_dict(), "sizes": list(mcfg.sizes), "parameters": counts}
