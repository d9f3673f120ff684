"""What every `t2i train KIND` command shares: options made from its config's fields, the options of a run, turning
the parsed options (+ --config file + --preset) into the config, and the result report.

An option's default and click type (range, choices, path checks) come from its field in t2icli/training/config.py, so
the command line and the library cannot drift; its help text and metavar are written here.
"""

import dataclasses
import os

import click

from t2icli.cli.common import err, resolve_device

__all__ = ["option", "apply_options", "run_options", "gan_options", "build_config", "print_dry_run", "report"]


def option(cls, name, metavar=None, help="", **overrides):
    """A click option for field `name` of config class `cls` (flag, default and type derived from the field)."""
    from t2icli.training.config import flag_of

    f = {f.name: f for f in dataclasses.fields(cls)}[name]
    meta, flag = f.metadata, flag_of(name)
    default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    kw = dict(default=default, show_default=default is not None, metavar=metavar, help=help)
    kind = meta["kind"]
    if kind == "int":
        kw["type"] = click.IntRange(meta.get("min"), meta.get("max")) if "min" in meta or "max" in meta else int
    elif kind == "float":
        kw["type"] = click.FloatRange(meta.get("min"), meta.get("max"), min_open=bool(meta.get("min_open")),
                                      max_open=bool(meta.get("max_open")))
    elif kind == "str" and meta.get("choices"):
        kw["type"], kw["metavar"] = click.Choice(meta["choices"]), None
    elif kind == "path":
        kw["type"] = click.Path(exists=meta.get("must_exist", True), file_okay=meta.get("file_okay", True),
                                dir_okay=meta.get("dir_okay", True))
    elif kind == "strs":  # a repeatable flag: none given is the empty list
        kw.update(multiple=True, show_default=False)
        kw.pop("default")
    elif kind == "bool":
        kw.pop("metavar")
        if meta.get("flag_only"):
            return click.option(flag, name, is_flag=True, **dict(kw, show_default=False), **overrides)
        return click.option(f"{flag}/--no-{flag[2:]}", name, **kw, **overrides)
    kw.update(overrides)
    return click.option(flag, name, **kw)


def apply_options(fn, opts):
    """Decorate fn with click options `opts`, listed in --help in the order given."""
    for opt in reversed(opts):  # decorators apply bottom-up: keep the listed order in --help
        fn = opt(fn)
    return fn


def run_options(cls, *, batch_help, compile_help, precision_help, checkpoint_help):
    """Decorator: the options of a run every trainer has (data, out, batch, device, precision, checkpoints, ...), and
    the invocation options --config, --resume, --progress, --dry-run (not fields: they say how to run, not what).
    --preset's help lists every preset of the kind from training/config.py (preset_help)."""
    from t2icli.training.config import PRESETS, preset_help

    kind = cls.KINDS[0]
    opts = [
        click.option("--config", "config", default=None, metavar="RUN/config.json",
                     type=click.Path(exists=True), help="Start from the options of this config file (a run folder's "
                     "config.json, or the folder); options given on the command line override them."),
        option(cls, "data", "DIR", "Prepared dataset folder (from `t2i prep`).  [required]"),
    ]
    if hasattr(cls, "damsm"):
        opts.append(option(cls, "damsm", "RUN", "DAMSM run folder (from `t2i train damsm` on the same --data); its "
                                                "text encoder is frozen.  [required]"))
    opts += [
        option(cls, "out", "RUN", "Run folder to create (or to continue with --resume latest).  [required]"),
    ]
    if PRESETS[kind]:
        described = preset_help(kind)
        opts.append(option(cls, "preset", None, "A named configuration; options given explicitly override it. "
                                                + described, type=click.Choice(list(PRESETS[kind]))))
    opts += [
        option(cls, "batch_size", "B", batch_help),
        option(cls, "max_minutes", "MIN", "Stop training after this many minutes (this invocation), then evaluate "
                                          "and export."),
        option(cls, "device", "DEV", "auto (cuda if available, else cpu), cpu, cuda, cuda:1, ...", default="auto",
               show_default=True),
        option(cls, "precision", None, precision_help),
        option(cls, "compile", None, compile_help),
        option(cls, "seed", "INT", "Random seed (initialisation, data order, augmentation, noise, dropout)."),
        option(cls, "augment", None, "How training images vary: scale-crop = AttnGAN's (scaled to 76/64 of the "
                                     "side, a random crop, flipped half the time: objects look 76/64 larger than in "
                                     "the whole test images, and a GAN trained so draws them that much larger); "
                                     "flip = the whole image, flipped half the time (where object size matters, as "
                                     "on toybirds); none."),
        option(cls, "class_pairs", None, "Fill every batch with pairs of same-class images, so that every other "
                                         "wrong (image, caption) pair of the discriminator, and a negative of every "
                                         "image in the DAMSM losses, shares the image's class: the networks must "
                                         "read more than the class. Off: a plain shuffle, as the references."),
        click.option("--resume", default=None, metavar="latest|PATH", callback=_check_resume,
                     help="Continue a run: 'latest' = newest checkpoint in --out, or a checkpoint file / run folder. "
                          "Give the run's options again (or --config RUN/config.json)."),
        option(cls, "keep", "K", "Keep the latest K checkpoints in RUN/checkpoints."),
        option(cls, "checkpoint_every", "STEPS", checkpoint_help),
        option(cls, "workers", "N", "Data-loading processes (0 = in the training process; best on a 2-core CPU)."),
        option(cls, "threads", "N", "CPU threads for torch (0 = torch's default, one per core). 1 is faster on a "
                                    "busy machine."),
        option(cls, "log_every", "STEPS", "Append the running means of the losses to stats.jsonl (and log them "
                                          "without a progress bar) every STEPS steps.  [default: total/20, at most "
                                          "100]"),
        option(cls, "tensorboard", None, "Also write the stats.jsonl scalars (losses, R-precision, img/s, learning "
                                         "rates) and the snapshot grids to RUN/tensorboard/ for TensorBoard (needs "
                                         "`pip install -e .[tensorboard]`)."),
        click.option("--progress/--no-progress", default=True, show_default=True,
                     help="Show the progress bar on stderr."),
        click.option("--dry-run", "dry_run", is_flag=True, default=False,
                     help="Build the networks at the resolved settings, print one JSON object on stdout (the "
                          "resolved config and every network's parameter count) and exit without training or "
                          "writing anything. " + ("With --preset cub-paper|coco-paper neither --data nor --damsm is "
                                                  "needed (the preset's image size, vocabulary size and text "
                                                  "dimension stand in)." if hasattr(cls, "damsm") else
                                                  "With --preset cub-paper|coco-paper --data is not needed (the "
                                                  "preset's vocabulary size stands in).")),
    ]
    return lambda fn: apply_options(fn, opts)


def gan_options(cls, *, gf_help, df_help):
    """Decorator: the options the four GAN trainers share (widths, Adam, EMA, snapshots, prompts)."""
    opts = [
        option(cls, "lr_g", "LR", "Generator Adam learning rate (betas 0.5, 0.999)."),
        option(cls, "lr_d", "LR", "Discriminator Adam learning rate (betas 0.5, 0.999)."),
        option(cls, "gf_dim", "C", gf_help),
        option(cls, "df_dim", "C", df_help),
        option(cls, "z_dim", "N", "Noise dimension."),
        option(cls, "ema", None, "Keep an EMA copy of G and export it (else the raw G is exported)."),
        option(cls, "ema_beta", "BETA", "EMA decay per step."),
        option(cls, "snapshot_every", "STEPS", "Write fakes<step>.png (fixed noise and prompts, every stage) and a "
                                               "quick generated-image R-precision every this many steps (and at "
                                               "step 0)."),
        option(cls, "prompts", "TEXT", "A caption drawn (with fixed noise) in every snapshot grid, besides the "
                                       "first test captions; repeat for more."),
    ]
    return lambda fn: apply_options(fn, opts)


def _check_resume(ctx, param, value):
    """--resume: 'latest' or an existing checkpoint file / run folder."""
    if value is None or value == "latest" or os.path.exists(value):
        return value
    raise click.BadParameter(f"{value!r} is neither 'latest' nor an existing checkpoint file or run folder")


def build_config(ctx, kind, params, skip_preset=()):
    """The config of `t2i train KIND` from its parsed options: the field defaults, then the --config file, then the
    --preset's values (when --preset is given), then every option given explicitly. Returns (config, resume,
    progress); training.loop.fit validates it (a bad value is a ConfigError: exit 2, naming the flag).

    A preset's "steps" is not applied when --epochs is given (nor its --epochs when --steps is; likewise for
    StackGAN's --stage1-steps / --stage1-epochs, ...); names in `skip_preset` are never applied. Where such a pair
    excludes each other, giving one explicitly drops the other's value from the config file. An unknown preset, or
    one with no reference configuration, is a ConfigError.
    """
    from click.core import ParameterSource

    from t2icli.training.config import CONFIGS, load_config_file, preset_values

    cls = CONFIGS[kind]
    params = dict(params)
    config_file, resume, progress = params.pop("config", None), params.pop("resume", None), params.pop("progress")
    params.pop("dry_run", None)
    explicit = {n for n in params if ctx.get_parameter_source(n) not in
                (ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP, None)}
    pairs = ((("steps", "epochs"),) if cls.STEPS_OR_EPOCHS else ()) + tuple(cls.EXCLUSIVE)
    values = load_config_file(config_file, kind) if config_file else {}
    if "preset" in explicit and params["preset"] is not None:
        blocked = {b for pair in pairs for a, b in (pair, pair[::-1]) if a in explicit}  # the explicit one's partner
        for name, value in preset_values(kind, params["preset"]).items():
            if name in cls.field_names() and name not in skip_preset and name not in blocked:
                values[name] = value
    for name, value in params.items():
        if name in explicit or name not in values:
            values[name] = list(value) if isinstance(value, tuple) else value
    for pair in pairs:
        for a, b in (pair, pair[::-1]):
            if a in explicit and b not in explicit and b in values:
                values[b] = None
    values["device"] = resolve_device(values["device"])
    return cls(**{k: v for k, v in values.items() if k != "kind"}), resume, progress


def print_dry_run(cfg):
    """--dry-run: the JSON object of training.dryrun.dry_run(cfg) on stdout, nothing else."""
    import json

    from t2icli.training.dryrun import dry_run

    click.echo(json.dumps(dry_run(cfg), indent=2))


def report(result, none_reason, what="generated images", counted="test captions"):
    """Progress summary on stderr, the R-precision on stdout (rank 0 only under torchrun)."""
    if not result["is_main"]:
        return
    ips = result["images_per_s"]
    err(f"trained {result['step']} steps ({result['stop']}, {result['epoch']} epochs) in "
        f"{result['train_seconds']:.0f} s" + (f", {ips:.1f} img/s" if ips else "")
        + f", {result['seconds']:.0f} s in all; export {result['export']}"
        + (f"; grid {result['snapshot']}" if result.get("snapshot") else ""))
    rp = result["rprecision"]
    if rp is None:
        click.echo(f"R-precision: n/a ({none_reason})")
    else:
        click.echo(f"R-precision ({what}, {rp['n']} {counted}, 1 true + {rp['n_negatives']} other-class captions, "
                   f"{len(rp['runs'])} runs): {rp['mean']:.4f} ± {rp['std']:.4f}")
