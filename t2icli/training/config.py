"""One config dataclass per trainer: the fields a run is made of, their defaults and limits, presets, JSON round trip.

Every `t2i train KIND` flag is a field of KIND's config, with the flag's name (`--batch-size` -> `batch_size`;
the one exception, `--prompt TEXT` given several times, is the list `prompts`). The CLI builds the config
(cli/train_options.py derives each option's default and click type from the field, so the two cannot drift),
`validate()` checks it once, and the run folder's `config.json` is exactly `to_dict()`:
`t2i train KIND --config RUN/config.json [flags]` rebuilds it, explicit flags overriding. Fields with no flag
(e.g. `n_prompts`) are set from Python or from a config file. The limits of a field (`min`, `choices`, ...) are
declared once, beside it, in the field's metadata: click enforces them on the command line and `validate()` for
every other caller.

This module imports no torch, so `t2i train KIND --help` stays instant.
"""

import dataclasses
import json
import math
import os

from t2icli.data.images import AUGMENTS
from t2icli.errors import ConfigError

__all__ = ["TrainConfig", "DAMSMTrainConfig", "GANTrainConfig", "AttnGANTrainConfig",
           "StackGAN2TrainConfig", "StackGANTrainConfig", "GanClsTrainConfig", "CONFIGS", "PRESETS", "PAPER_PRESETS",
           "preset_values", "preset_help", "flag_of", "load_config_file"]


# -- field declarations -----------------------------------------------------------------------------
def _field(kind, default, **meta):
    meta = {"kind": kind, **{k: v for k, v in meta.items() if v is not None}}
    if isinstance(default, (list, tuple)):
        return dataclasses.field(default_factory=lambda d=tuple(default): list(d), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def Int(default=None, *, min=None, max=None):  # noqa: N802 - reads like a type in the declarations below
    """An int field (None allowed when it is the default), optionally within [min, max]."""
    return _field("int", default, min=min, max=max)


def Float(default=None, *, min=None, max=None, min_open=False, max_open=False):  # noqa: N802
    """A float field; min_open / max_open exclude the bound itself."""
    return _field("float", default, min=min, max=max, min_open=min_open or None, max_open=max_open or None)


def Bool(default=False, *, flag_only=False):  # noqa: N802
    """A bool field: `--name/--no-name` on the command line, or a plain `--name` switch when flag_only."""
    return _field("bool", default, flag_only=flag_only or None)


def Str(default=None, *, choices=None):  # noqa: N802
    """A string field, optionally one of `choices`."""
    return _field("str", default, choices=tuple(choices) if choices else None)


def Path(default=None, *, must_exist=True, dir_okay=True, file_okay=True):  # noqa: N802
    """A filesystem path, stored absolute (so a config file reruns from any folder)."""
    return _field("path", default, must_exist=must_exist, dir_okay=dir_okay, file_okay=file_okay)


def Strs(default=()):  # noqa: N802
    """A list of strings (a repeatable flag)."""
    return _field("strs", default)


def flag_of(name):
    """The command-line flag of field `name`: `batch_size` -> `--batch-size` (`prompts` -> `--prompt`)."""
    return "--prompt" if name == "prompts" else "--" + name.replace("_", "-")


def _check_field(f, value):
    """Raise ConfigError unless `value` fits field f's declaration."""
    meta, flag = f.metadata, flag_of(f.name)
    kind = meta.get("kind")
    if value is None:
        if f.default is None:
            return
        raise ConfigError(f"{flag}: a value is required")
    if kind == "int" and (isinstance(value, bool) or not isinstance(value, int)):
        raise ConfigError(f"{flag} {value!r}: must be an integer")
    if kind == "float" and (isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value)):
        raise ConfigError(f"{flag} {value!r}: must be a number")
    if kind == "bool" and not isinstance(value, bool):
        raise ConfigError(f"{flag} {value!r}: must be true or false")
    if kind in ("str", "path") and not isinstance(value, str):
        raise ConfigError(f"{flag} {value!r}: must be a string")
    if kind == "strs" and not (isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)):
        raise ConfigError(f"{flag} {value!r}: must be a list of strings")
    lo, hi = meta.get("min"), meta.get("max")
    if lo is not None and (value < lo or (meta.get("min_open") and value == lo)):
        raise ConfigError(f"{flag} {value}: must be {'>' if meta.get('min_open') else '>='} {lo}")
    if hi is not None and (value > hi or (meta.get("max_open") and value == hi)):
        raise ConfigError(f"{flag} {value}: must be {'<' if meta.get('max_open') else '<='} {hi}")
    if meta.get("choices") and value not in meta["choices"]:
        raise ConfigError(f"{flag} {value!r}: choose from {', '.join(meta['choices'])}")
    if kind == "path" and meta.get("must_exist"):
        if not os.path.exists(value):
            raise ConfigError(f"{flag} {value}: does not exist")
        if os.path.isdir(value) and not meta.get("dir_okay", True):
            raise ConfigError(f"{flag} {value}: is a folder, not a file")
        if not os.path.isdir(value) and not meta.get("file_okay", True):
            raise ConfigError(f"{flag} {value}: is a file, not a folder")


# -- the configs ------------------------------------------------------------------------------------
@dataclasses.dataclass
class TrainConfig:
    """The fields every trainer has. Subclasses set `kind`'s default (and its choices when one class trains two
    kinds) and add their own fields."""

    KINDS = ()  # the kinds this config trains; KINDS[0] is the default
    STEPS_OR_EPOCHS = False  # True: --steps and --epochs exclude each other (else the first reached stops)
    EXCLUSIVE = ()  # more (steps, epochs) pairs: giving one explicitly drops the other's value from a config/preset

    kind: str = Str()
    data: str = Path(dir_okay=True, file_okay=False)
    out: str = Path(must_exist=False, file_okay=False)
    preset: str = Str()
    batch_size: int = Int(48, min=2)
    seed: int = Int(0, min=0)
    device: str = Str("cpu")
    precision: str = Str("fp32", choices=("fp32", "bf16"))
    compile: bool = Bool(False, flag_only=True)
    max_minutes: float = Float(None, min=0, min_open=True)
    checkpoint_every: int = Int(None, min=1)
    keep: int = Int(3, min=1)
    workers: int = Int(0, min=0)
    threads: int = Int(0, min=0)
    log_every: int = Int(None, min=1)
    tensorboard: bool = Bool(False, flag_only=True)
    # How training images are varied (data.images.AUGMENTS): AttnGAN's Scale(76/64) + random crop + flip, or a flip
    # alone (objects keep the size and sharpness the test images have), or nothing.
    augment: str = Str("scale-crop", choices=AUGMENTS)
    # Batches made of same-class pairs (data.dataset.class_pair_order). The trainers' negatives come from the batch:
    # AttnGAN's D pairs row k's image with row k+1's caption, so every other wrong pair is then of the same class
    # and D must read more than the class (on toybirds: body x wing) to reject it; the DAMSM losses (without the
    # class mask) get a same-class negative for every image. Off (the references): a plain shuffle.
    class_pairs: bool = Bool(False)

    def __post_init__(self):
        if self.kind is None:
            self.kind = self.KINDS[0]

    def to_dict(self):
        """The JSON-able dict of the fields (what RUN/config.json holds)."""
        return dataclasses.asdict(self)

    @classmethod
    def field_names(cls):
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, d, where="config"):
        """Inverse of to_dict. Raises ConfigError naming unknown keys (another trainer's config, a newer t2i)."""
        if not isinstance(d, dict):
            raise ConfigError(f"{where}: not a JSON object of training options")
        unknown = sorted(set(d) - set(cls.field_names()))
        if unknown:
            raise ConfigError(f"{where}: unknown option(s) {', '.join(unknown)} for `t2i train "
                              f"{'|'.join(cls.KINDS)}` (a config of another trainer, or of another t2i version?)")
        return cls(**d)

    def validate(self, dry_run=False):
        """Check every field against its declaration, then the rules that tie fields together. Normalises paths
        to absolute ones. Raises ConfigError naming the flag. Returns self.

        dry_run: the config of a `--dry-run` (nothing is trained or written): --out and the inputs (--data,
        --damsm) may be missing; training/dryrun.py decides what must stand in for them."""
        if self.kind not in self.KINDS:
            raise ConfigError(f"kind {self.kind!r}: this config trains {' or '.join(self.KINDS)}")
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.metadata.get("kind") == "float" and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
                setattr(self, f.name, value)
            if f.metadata.get("kind") == "strs" and isinstance(value, tuple):
                value = list(value)
                setattr(self, f.name, value)
            if f.metadata.get("kind") == "path" and isinstance(value, os.PathLike):
                value = os.fspath(value)
            _check_field(f, value)
            if f.metadata.get("kind") == "path" and value is not None:
                setattr(self, f.name, os.path.abspath(os.fspath(value)))
        for name in () if dry_run else ("data", "out"):
            if getattr(self, name) is None:
                raise ConfigError(f"{flag_of(name)} is required (or --config RUN/config.json)")
        if self.preset is not None:
            preset_values(self.kind, self.preset)  # an unknown or unavailable preset is a ConfigError
        self.check(dry_run)
        return self

    def check(self, dry_run=False):
        """Rules between fields (subclasses extend it); dry_run as in validate()."""
        if self.class_pairs and self.batch_size % 2:
            raise ConfigError(f"--batch-size {self.batch_size}: --class-pairs fills batches with pairs, so it must be "
                              "even")

    def describe_changes(self, old):
        """'name: a -> b' for every field that differs from the dict `old` (e.g. a resumed run's config.json), and
        'name: not in config.json -> b' for a field `old` lacks (added to t2i since) that is set to other than its
        default."""
        now = self.to_dict()
        default = {f.name: f.default for f in dataclasses.fields(self) if f.default is not dataclasses.MISSING}
        return ([f"{k}: {old.get(k)!r} -> {now[k]!r}" for k in now if k in old and old.get(k) != now[k]]
                + [f"{k}: not in config.json -> {now[k]!r}" for k in now
                   if k not in old and k in default and now[k] != default[k]])


@dataclasses.dataclass
class DAMSMTrainConfig(TrainConfig):
    """`t2i train damsm`: the DAMSM text and image encoders (AttnGAN's pretrain_DAMSM.py)."""

    KINDS = ("damsm",)

    steps: int = Int(None, min=1)
    epochs: int = Int(600, min=1)
    lr: float = Float(0.002, min=0, min_open=True)
    image_encoder: str = Str("small", choices=("small", "inception_v3"))
    inception_weights: str = Path(dir_okay=False)
    small_width: int = Int(16, min=4)
    small_pool: str = Str("avgmax", choices=("avg", "avgmax"))
    small_grid: int = Int(8, min=2)  # the small encoder's local-feature grid (its word-attention regions)
    gamma1: float = Float(4.0, min=0, min_open=True)
    gamma2: float = Float(5.0, min=0, min_open=True)
    gamma3: float = Float(10.0, min=0, min_open=True)
    dropout: float = Float(0.5, min=0, max=1, max_open=True)
    grad_clip: float = Float(0.25, min=0, min_open=True)
    eval_every: int = Int(1, min=1)
    n_attention: int = Int(8, min=0)
    rprecision_runs: int = Int(10, min=1)
    word_limit: int = Int(None, min=1)  # None: the data set's (dataset.json word_limit)
    backbone_batch_stats: bool = Bool(False)  # AttnGAN's cnn_model.train(): the frozen Inception's BN in train mode
    reset_adam: bool = Bool(False)  # AttnGAN's pretrain_DAMSM.py: a new Adam (fresh moments) at every epoch
    # AttnGAN's words_loss / sent_loss (code/miscc/losses.py) never count two images of one class as negatives of
    # each other. Off: every other image of the batch is a negative (toybirds: its classes are only body x wing,
    # so with the mask the loss never asks the encoders to tell two crowns, bellies or beaks apart).
    class_mask: bool = Bool(True)
    # Not in AttnGAN: K edited copies of each caption (one colour, size, beak-length, scene or body-part word changed,
    # data/negatives.py) as extra negatives of its image, so the loss asks for every fact a caption states.
    hard_negatives: int = Int(0, min=0)
    # Not in AttnGAN: K copies of each caption with two colour words exchanged (data/negatives.py), extra negatives
    # of its image that a bag of words cannot tell from the caption: the encoders must bind each colour to its part.
    swap_negatives: int = Int(0, min=0)
    # Not in AttnGAN: keep only edits whose new word makes bigrams and trigrams the training captions have (data/
    # negatives.py), so an edited caption cannot be told from a real one by its text alone
    natural_edits: bool = Bool(False)
    # Not in AttnGAN: the training captions' words permuted locally (no word moves more than K places; 0 = off), so
    # the text encoder reads a colour beside its part in either order ("blue wings", "wings blue").
    word_shuffle: float = Float(0.0, min=0)
    # Not in AttnGAN: the weight of a masked-word term (models.damsm.RegionWordPredictor, a training-only head): each
    # caption word named from its neighbours and the image regions they attend to, so the image encoder's regions
    # hold every part's colour (0 = off).
    word_prediction: float = Float(0.0, min=0)

    def check(self, dry_run=False):
        super().check(dry_run)
        for name in ("inception_weights", "backbone_batch_stats"):
            if self.image_encoder == "small" and getattr(self, name):
                raise ConfigError(f"{flag_of(name)} is only used with --image-encoder inception_v3")
        if self.natural_edits and not (self.hard_negatives or self.swap_negatives):
            raise ConfigError("--natural-edits filters the edited captions of --hard-negatives K or --swap-negatives K; "
                              "give one of them K >= 1")
        if self.small_grid & (self.small_grid - 1):
            raise ConfigError(f"--small-grid {self.small_grid}: must be a power of two (the small encoder halves the "
                              f"image until it reaches the grid)")


@dataclasses.dataclass
class GANTrainConfig(TrainConfig):
    """What the four GAN trainers share: the DAMSM run whose text encoder conditions them, widths, Adam, EMA,
    snapshots."""

    damsm: str = Path()
    lr_g: float = Float(2e-4, min=0, min_open=True)
    lr_d: float = Float(2e-4, min=0, min_open=True)
    gf_dim: int = Int(32, min=1)
    df_dim: int = Int(64, min=1)
    z_dim: int = Int(100, min=1)
    ema: bool = Bool(True)
    ema_beta: float = Float(0.999, min=0, max=1, max_open=True)
    snapshot_every: int = Int(1000, min=1)
    prompts: list = Strs()
    n_prompts: int = Int(8, min=0)
    snapshot_rprecision: int = Int(300, min=0)
    final_rprecision: int = Int(None, min=0)
    rprecision_runs: int = Int(10, min=1)

    def check(self, dry_run=False):
        super().check(dry_run)
        if self.damsm is None and not dry_run:
            raise ConfigError("--damsm is required (the DAMSM run from `t2i train damsm` on the same --data)")
        if self.STEPS_OR_EPOCHS and self.steps is not None and self.epochs is not None:
            raise ConfigError("give --steps or --epochs, not both")
        if getattr(self, "text_embeddings", None) is not None and self.prompts:  # the trainers that take them
            raise ConfigError("--prompt needs the DAMSM text encoder; it does not go with --text-embeddings (the "
                              "snapshots show the first training images' captions)")


@dataclasses.dataclass
class _TreeConfig(GANTrainConfig):
    """AttnGAN and StackGAN++: one generator tree of 1-3 stages trained at once, one D per stage."""

    STEPS_OR_EPOCHS = True

    batch_size: int = Int(20, min=2)
    steps: int = Int(None, min=1)
    epochs: int = Int(None, min=1)  # neither: 600 epochs
    stages: int = Int(3, min=1, max=3)
    cond_dim: int = Int(100, min=1)
    r_num: int = Int(2, min=0)  # the references' GAN.R_NUM: residual blocks per next stage
    kl_weight: float = Float(1.0, min=0)
    r1_gamma: float = Float(0.0, min=0)
    r1_every: int = Int(1, min=1)
    lr_decay_steps: int = Int(None, min=1)  # the last N steps: lr_g and lr_d fall linearly to 0 (None: constant)
    standing_stats: int = Int(0, min=0)  # sample (snapshots, export) with BN statistics of N training captions
    # StackGAN++'s colour consistency between consecutive stages' images (pixel mean and covariance; not in
    # AttnGAN, whose stages share only their hidden features, so the default is off there and on in StackGAN++)
    color_consistency: bool = Bool(False)
    cc_lambda1: float = Float(1.0, min=0)  # mean term: StackGAN-v2 trainer.py:631-657 COLOR_LOSS (50 in *_color.yml)
    cc_lambda2: float = Float(5.0, min=0)  # covariance term: 5 x COLOR_LOSS there
    cc_detach: bool = Bool(False)  # StackGAN-v2: the smaller stage's statistics are a fixed target


@dataclasses.dataclass
class AttnGANTrainConfig(_TreeConfig):
    """`t2i train attngan` (AttnGAN's trainer.py with cfg/bird_attn2.yml's knobs)."""

    KINDS = ("attngan",)

    damsm_weight: float = Float(5.0, min=0)
    damsm_augment: bool = Bool(False)
    class_mask: bool = Bool(True)  # the DAMSM term's same-class mask (as `t2i train damsm --class-mask`)
    hard_negatives: int = Int(0, min=0)  # the DAMSM term's edited captions (as `t2i train damsm --hard-negatives`)
    # Not in AttnGAN: this share of D's wrong pairs is (real image, its own caption with one word edited) instead
    # of (real image, another sample's caption); rows whose caption has nothing to edit keep the other caption.
    edited_wrong: float = Float(0.0, min=0, max=1)
    natural_edits: bool = Bool(False)  # as `t2i train damsm --natural-edits`, for both kinds of edits

    def check(self, dry_run=False):
        super().check(dry_run)
        if self.natural_edits and not (self.hard_negatives or self.edited_wrong):
            raise ConfigError("--natural-edits filters edited captions: it needs --hard-negatives K or --edited-wrong "
                              "SHARE")


@dataclasses.dataclass
class StackGAN2TrainConfig(_TreeConfig):
    """`t2i train stackgan2` (StackGAN-v2's trainer.py): the tree without attention or DAMSM term."""

    KINDS = ("stackgan2",)

    # on in t2i's StackGAN++ since its first version (weights 1 / 5); StackGAN-v2's own default is off
    # (miscc/config.py:49 COLOR_LOSS 0), its *_color.yml configs 50
    color_consistency: bool = Bool(True)
    d_condition: str = Str("sentence", choices=("sentence", "mu"))  # what the Ds' conditional heads see
    wrong: str = Str("captions", choices=("captions", "images"))  # D's mismatched pairs
    uncond_loss: float = Float(None, min=0)  # None: AttnGAN's D loss; W: StackGAN-v2's with UNCOND_LOSS W
    unconditional: bool = Bool(False, flag_only=True)  # StackGAN-v2's B_CONDITION False
    text_embeddings: str = Path(dir_okay=False)

    def check(self, dry_run=False):
        super().check(dry_run)
        if self.unconditional and self.text_embeddings is not None:
            raise ConfigError("--unconditional trains on images alone; it does not go with --text-embeddings")
        if self.standing_stats and self.text_embeddings is not None:
            raise ConfigError("--standing-stats encodes training captions with the DAMSM text encoder; it does not go "
                              "with --text-embeddings")


@dataclasses.dataclass
class _BaselineConfig(GANTrainConfig):
    """GAN-INT-CLS and StackGAN v1: conditioned on DAMSM sentence features or StackGAN's char-CNN-RNN embeddings."""

    batch_size: int = Int(64, min=2)
    text_embeddings: str = Path(dir_okay=False)
    lr_decay_epochs: int = Int(None, min=1)  # halve lr_g and lr_d every this many epochs (None: never)


@dataclasses.dataclass
class GanClsTrainConfig(_BaselineConfig):
    """`t2i train gancls` (Reed et al. 2016, main_cls_int.lua)."""

    KINDS = ("gancls",)
    STEPS_OR_EPOCHS = True

    gf_dim: int = Int(64, min=1)
    steps: int = Int(None, min=1)
    epochs: int = Int(None, min=1)  # neither: 600 epochs
    lr_s: float = Float(2e-4, min=0, min_open=True)
    proj_dim: int = Int(128, min=1)
    interp: bool = Bool(True)
    interp_beta: float = Float(0.5, min=0, max=1)
    interp_weight: float = Float(1.0, min=0)
    train_style_encoder: bool = Bool(False, flag_only=True)
    n_captions: int = Int(1, min=1)  # the sentence feature: mean of this many captions of the image (numCaption)
    wrong: str = Str("captions", choices=("captions", "images"))  # D's mismatched pairs
    cls_weight: float = Float(0.5, min=0, max=1)  # D: real + cls_weight * wrong + (1 - cls_weight) * fake
    g_batch: str = Str("same", choices=("same", "fresh"))  # G's samples: the D step's, or freshly drawn
    layout: str = Str("reference", choices=("reference", "coco", "legacy"))  # models.gancls's network layouts

    def check(self, dry_run=False):
        super().check(dry_run)
        if self.g_batch == "fresh" and self.interp and self.batch_size % 2:
            raise ConfigError(f"--batch-size {self.batch_size}: --g-batch fresh with --interp interpolates the first "
                              "and the second half of the batch, so it must be even")


@dataclasses.dataclass
class StackGANTrainConfig(_BaselineConfig):
    """`t2i train stackgan` (StackGAN v1, StackGAN-Pytorch): Stage-I, then Stage-II with Stage-I frozen."""

    KINDS = ("stackgan",)
    EXCLUSIVE = (("stage1_steps", "stage1_epochs"), ("stage2_steps", "stage2_epochs"))

    gf_dim: int = Int(128, min=1)
    stage1_steps: int = Int(10000, min=1)
    stage2_steps: int = Int(10000, min=1)
    stage1_epochs: int = Int(None, min=1)  # when set, replaces --stage1-steps
    stage2_epochs: int = Int(None, min=1)  # when set, replaces --stage2-steps
    cond_dim: int = Int(128, min=1)
    res_blocks: int = Int(4, min=0)
    kl_weight: float = Float(2.0, min=0)
    stage2_uncond: bool = Bool(False)  # StackGAN-Pytorch: Stage-II's D also scores with its unconditional head


CONFIGS = {"damsm": DAMSMTrainConfig, "attngan": AttnGANTrainConfig, "stackgan2": StackGAN2TrainConfig,
           "gancls": GanClsTrainConfig, "stackgan": StackGANTrainConfig}


# -- presets: named sets of field values; an explicit flag overrides the preset's value -----------------------
_TOY_PROMPTS = ["a red bird with blue wings", "a yellow bird with black wings", "a blue bird with a red crown",
                "a green bird with white wings", "a white bird with a purple crown", "a black bird with orange wings"]
_TOY_TREE = {
    "description": "2 stages (32/64 px) on toybirds 64 px, 2500 steps of 16 (about 7 minutes on 2 CPU cores)",
    "stages": 2, "gf_dim": 8, "df_dim": 8, "batch_size": 16, "steps": 2500, "lr_g": 2e-3, "lr_d": 2e-3,
    "r1_gamma": 2.0, "r1_every": 4, "z_dim": 64, "cond_dim": 64, "ema_beta": 0.99, "snapshot_every": 500,
    "prompts": _TOY_PROMPTS,
}
PRESETS = {
    "damsm": {"toybirds-cpu": {
        # Twice the reference's rate, and each caption's colours swapped as a negative: the text encoder learns which
        # part (body or wing) each colour word names only after a plateau (real R-precision 0.82 from step 1200 to 2000
        # at lr 0.002, 0.96 at 2822; at lr 0.004 0.92 at 1992, 0.96 at 2324); with --swap-negatives 1 (0.87 at 1328,
        # 0.96 at 1826, 0.963 at 2000) the 800 steps saved train the GAN. Before the binding, "a red bird with blue
        # wings" and "a blue bird with red wings" score alike and the GAN paints the two colours in either place
        "description": "the small image encoder on toybirds 64 px, 2000 steps of 48 at lr 0.004, every other bird and "
                       "the caption with two colours swapped negatives (about 5 minutes on 2 CPU cores)",
        # eval_every 5: the test split's evaluation after epochs 5 and 10 and at the end instead of after each of the
        # 12 epochs (about 1 s each; the model is the same to the bit: evaluation restores the RNG streams)
        "steps": 2000, "lr": 0.004, "class_mask": False, "swap_negatives": 1, "eval_every": 5},
        "toybirds-pretrained": {
            "description": "the shipped model's DAMSM (scripts/train_pretrained.sh): the small image encoder on "
                           "toybirds 64 px, 4000 steps of 48, every other bird and 2 edited copies of each caption "
                           "negatives, word dropout 0.1, captions' words locally permuted (K 0.5), the masked-word "
                           "term at weight 1",
            # word_prediction 1: the image features' beak colour 0.49 -> 0.63 (scripts/probe_damsm.py --image-probe,
            # pooled regions), and the GAN trained on it beak 0.50 -> 0.64, attribute accuracy 0.841 -> 0.850,
            # paraphrase gap 0.101 -> 0.079, but data-FID 149.4 -> 191.2 (one whole run of the script; README)
            "steps": 4000, "eval_every": 5, "class_mask": False, "hard_negatives": 2, "dropout": 0.1,
            "word_shuffle": 0.5, "word_prediction": 1.0}},
    # 3300 steps: the time the swapped-colour DAMSM saves (above); on it, seeds 0 / 1 / 2 scored attribute accuracy
    # 0.640 / 0.634 / 0.552 at 2500 steps and 0.665 / 0.661 / 0.623 at 3300; on the 2800-step DAMSM before, 0.582 /
    # 0.609 / 0.544 at 2500. stages 3 (16/32/64 px, two attention stages, as the paper's 64/128/256): 1.1x the
    # step at these widths (scripts/profile_gan.py); seeds 0 / 1 / 2 0.684 / 0.683 / 0.656, data-FID 481 / 506 / 567
    # (2 stages: 0.665 / 0.661 / 0.623, 529 / 503 / 593; README: Results of the demo).
    # steps 3100: the demo in 15 minutes; the three seeds at 3000 / 3100 / 3200 / 3300 steps, means 0.665 / 0.676 /
    # 0.677 / 0.674, data-FID 523 / 510 / 493 / 518 (inside the seeds' spread)
    # ema_beta stays 0.99 here: the seed-0 run on the demo's DAMSM averaged at 0.99 / 0.995 / 0.998 / 0.999 (each
    # sampled with standing statistics) scored data-FID 514.6 / 545.2 / 588.2 / 629.0 (README: the shipped model)
    "attngan": {"toybirds-cpu": dict(_TOY_TREE, stages=3, damsm_augment=True, class_mask=False, steps=3100,
                                     description="3 stages (16/32/64 px) on toybirds 64 px, 3100 steps of 16 (about "
                                                 "8 minutes on 2 CPU cores)"),
                "toybirds-pretrained": dict(
                    _TOY_TREE, description="the shipped model (scripts/train_pretrained.sh): 3 stages (16/32/64 px, "
                    "two attention stages as AttnGAN's) on toybirds 64 px, G twice and D four times the toybirds-cpu "
                    "width, 9000 steps of 16, 2 edited "
                    "captions per image in the DAMSM term, half of D's wrong pairs edited captions, real images "
                    "flipped but not zoomed, seed 1; sampled from a 0.999 average of G's weights with "
                    "standing BatchNorm statistics of 3200 training captions",
                    # augment "flip": AttnGAN's scale-crop shows D every real bird 76/64 larger than the test images
                    # draw it, and G follows (t2i eval's attr marginals: 59% of the birds large against 30%)
                    # stages 3: against 2 (32/64 px), data-FID 255.6 -> 202.8, crown 0.67 -> 0.89, beak 0.40 -> 0.49,
                    # but the scene word is lost (background 0.42 -> 0.24; the 64 px stage paints its own: README)
                    # standing_stats 3200: 12000 steps against 9000 sampled with the trained G's statistics (and the
                    # 0.99 average), data-FID 202.8 -> 149.4, attribute accuracy 0.823 -> 0.841 (README)
                    stages=3, gf_dim=16, df_dim=32, steps=9000, r1_gamma=0.0, r1_every=1, damsm_augment=True,
                    # natural_edits (not set): background 0.24 -> 0.39 but beak 0.50 -> 0.25, attribute accuracy
                    # 0.841 -> 0.814, data-FID 149.4 -> 174.1 in one whole run of the script (README)
                    # ema_beta 0.999 (half-life 693 steps) against 0.99 (69): the same run's generator averaged at
                    # 0.99 / 0.995 / 0.998 / 0.999 / 0.9995 scored data-FID 191.2 / 171.9 / 156.0 / 154.8 / 145.9 at
                    # step 12000 and 167.3 / - / 142.4 / 134.8 / 143.4 at 11000, attribute accuracy 0.850 -> 0.864,
                    # the bodies' checkerboard texture averaged away (README)
                    # steps 9000 with it (the script ~3/4 of the time): the 0.999 average at 8000 / 9000 / 10000 /
                    # 11000 / 12000 steps scored attribute accuracy 0.837 / 0.860 / 0.854 / 0.868 / 0.853, data-FID
                    # 161.6 / 155.4 / 150.7 / 134.8 / 154.8 (0.9995 at 9000: 0.847 / 170.5; README)
                    class_mask=False, snapshot_every=1000, hard_negatives=2, edited_wrong=0.5, seed=1,
                    augment="flip", standing_stats=3200, ema_beta=0.999)},
    "stackgan2": {"toybirds-cpu": dict(_TOY_TREE)},
    "gancls": {"toybirds-cpu": {
        "description": "DCGAN at 64 px with ngf = ndf = 16 on toybirds, 3000 steps of 32",
        "gf_dim": 16, "df_dim": 16, "batch_size": 32, "steps": 3000, "lr_g": 2e-4, "lr_d": 2e-4, "z_dim": 64,
        "ema_beta": 0.99, "snapshot_every": 500, "prompts": _TOY_PROMPTS}},
    "stackgan": {"toybirds-cpu": {
        "description": "Stage-I 16 px then Stage-II 64 px on toybirds, 2500 + 2500 steps of 32",
        "gf_dim": 16, "df_dim": 16, "batch_size": 32, "stage1_steps": 2500, "stage2_steps": 2500, "lr_g": 2e-4,
        "lr_d": 2e-4, "z_dim": 64, "cond_dim": 64, "res_blocks": 2, "ema_beta": 0.99, "snapshot_every": 250,
        "prompts": _TOY_PROMPTS}},
}

# The paper presets: every field the reference's config file (or its defaults) sets, so that `--preset cub-paper`
# on CUB is the paper's run. Non-field keys: "description" (--help), "reference" (the file it equals), "stand_in"
# (what `--dry-run` builds with when --data / --damsm are not given: the image size, the vocabulary size of
# AttnGAN's released captions.pickle, the text feature's size and source, the DAMSM image encoder) and
# "unavailable" (the reason a preset has no reference to equal; asking for it is an error saying so).
# Fields the references do not have keep t2i's defaults except where the reference's behaviour needs a value
# (no EMA where the reference keeps no average, no R1, no time limit, no prompts).
_PAPER_RUN = {"max_minutes": None, "prompts": []}
_CUB_WORDS, _COCO_WORDS = 5450, 27297  # AttnGAN's captions.pickle vocabularies (text_encoder200/100.pth)
_DAMSM_PAPER = dict(max_minutes=None, image_encoder="inception_v3", batch_size=48, epochs=600, steps=None, lr=0.002,
                    gamma1=4.0, gamma2=5.0, gamma3=10.0, grad_clip=0.25, dropout=0.5, eval_every=1,
                    backbone_batch_stats=True, reset_adam=True)
_ATTN_PAPER = dict(_PAPER_RUN, stages=3, z_dim=100, cond_dim=100, epochs=None, steps=None, lr_g=2e-4, lr_d=2e-4,
                   kl_weight=1.0, ema=True, ema_beta=0.999, r1_gamma=0.0, r1_every=1, damsm_augment=False,
                   snapshot_every=1000)
_BIRDS_1024 = {"text_dim": 1024, "text_source": "char-cnn-rnn"}  # StackGAN's / Reed's embeddings of CUB captions
PAPER_PRESETS = {
    "damsm": {
        "cub-paper": dict(_DAMSM_PAPER, word_limit=18, description=(
            "the DAMSM of the AttnGAN paper on CUB: Inception-v3 (needs --inception-weights) with its BatchNorm in "
            "training mode, 299 px crops, batch 48, 600 epochs, lr 0.002 (x0.98 per epoch), a new Adam every "
            "epoch, 18 words"), reference="taoxugit/AttnGAN code/cfg/DAMSM/bird.yml with code/pretrain_DAMSM.py",
            stand_in={"vocab_size": _CUB_WORDS}),
        "coco-paper": dict(_DAMSM_PAPER, word_limit=15, description=(
            "the DAMSM of the AttnGAN paper on COCO: as cub-paper with 15 words"),
            reference="taoxugit/AttnGAN code/cfg/DAMSM/coco.yml with code/pretrain_DAMSM.py",
            stand_in={"vocab_size": _COCO_WORDS}),
    },
    "attngan": {
        "cub-paper": dict(_ATTN_PAPER, gf_dim=32, df_dim=64, r_num=2, batch_size=20, epochs=600, damsm_weight=5.0,
                          description="AttnGAN on CUB: 3 stages to 256 px, gf 32, df 64, R_NUM 2, batch 20, 600 "
                                      "epochs, lambda 5", reference="taoxugit/AttnGAN code/cfg/bird_attn2.yml",
                          stand_in={"image_size": 256, "vocab_size": _CUB_WORDS, "text_dim": 256,
                                    "text_source": "damsm", "image_encoder": "inception_v3"}),
        "coco-paper": dict(_ATTN_PAPER, gf_dim=48, df_dim=96, r_num=3, batch_size=14, epochs=120, damsm_weight=50.0,
                           description="AttnGAN on COCO: 3 stages to 256 px, gf 48, df 96, R_NUM 3, batch 14, 120 "
                                       "epochs, lambda 50", reference="taoxugit/AttnGAN code/cfg/coco_attn2.yml",
                           stand_in={"image_size": 256, "vocab_size": _COCO_WORDS, "text_dim": 256,
                                     "text_source": "damsm", "image_encoder": "inception_v3"}),
    },
    "stackgan2": {
        "cub-paper": dict(_PAPER_RUN, stages=3, gf_dim=64, df_dim=64, z_dim=100, cond_dim=128, r_num=2, batch_size=24,
                          epochs=600, steps=None, lr_g=2e-4, lr_d=2e-4, kl_weight=2.0, uncond_loss=1.0,
                          d_condition="mu", wrong="images", color_consistency=False, cc_detach=True,
                          unconditional=False, ema=True, ema_beta=0.999, r1_gamma=0.0, r1_every=1,
                          snapshot_every=2000,
                          description="StackGAN++ on CUB: 3 stages to 256 px, gf 64, df 64, c 128, R_NUM 2, batch "
                                      "24, 600 epochs, KL x2, Ds on mu with wrong images and UNCOND_LOSS 1, no colour "
                                      "loss; the paper's text is char-CNN-RNN (--text-embeddings)",
                          reference="hanzhanggit/StackGAN-v2 code/cfg/birds_3stages.yml",
                          stand_in=dict(_BIRDS_1024, image_size=256)),
        "coco-paper": {"unavailable": "StackGAN-v2 publishes no COCO configuration (its code/cfg/ holds "
                                      "birds_3stages.yml and the unconditional LSUN / ImageNet ones); use --preset "
                                      "cub-paper with COCO's --data and set the widths yourself"},
    },
    "stackgan": {
        "cub-paper": dict(_PAPER_RUN, gf_dim=128, df_dim=64, z_dim=100, cond_dim=128, res_blocks=4, kl_weight=2.0,
                          batch_size=64, stage1_epochs=600, stage2_epochs=600, lr_g=2e-4, lr_d=2e-4,
                          lr_decay_epochs=600, stage2_uncond=True, ema=False, snapshot_every=1000,
                          description="StackGAN on CUB: Stage-I 64 px then Stage-II 256 px, gf 128, df 64, c 128, "
                                      "R_NUM 4, batch 64, 600 + 600 epochs, lr halved every 600 epochs, KL x2; the "
                                      "paper's text is char-CNN-RNN (--text-embeddings)",
                          reference="hanzhanggit/StackGAN-Pytorch code/miscc/config.py (its defaults are birds')",
                          stand_in=dict(_BIRDS_1024, image_size=256)),
        "coco-paper": dict(_PAPER_RUN, gf_dim=192, df_dim=96, z_dim=100, cond_dim=128, res_blocks=2, kl_weight=2.0,
                           batch_size=128, stage1_epochs=120, stage2_epochs=100, lr_g=2e-4, lr_d=2e-4,
                           lr_decay_epochs=20, stage2_uncond=True, ema=False, snapshot_every=1000,
                           description="StackGAN on COCO: gf 192, df 96, c 128, R_NUM 2, batch 128 (Stage-II's 40 is "
                                       "not a separate option: one batch size for both stages), 120 + 100 epochs, "
                                       "lr halved every 20 epochs, KL x2",
                           reference="hanzhanggit/StackGAN-Pytorch code/cfg/coco_s1.yml and coco_s2.yml",
                           stand_in=dict(_BIRDS_1024, image_size=256)),
    },
    "gancls": {
        "cub-paper": dict(_PAPER_RUN, gf_dim=128, df_dim=64, z_dim=100, proj_dim=128, batch_size=64, epochs=600,
                          steps=None, lr_g=2e-4, lr_d=2e-4, lr_decay_epochs=100, n_captions=4, wrong="images",
                          cls_weight=0.5, interp=True, interp_beta=0.5, interp_weight=1.0, g_batch="fresh",
                          layout="reference", ema=False, train_style_encoder=False, snapshot_every=1000,
                          description="GAN-INT-CLS on CUB: 64 px, ngf 128, ndf 64, batch 64, 600 epochs, lr halved "
                                      "every 100, the mean of 4 captions, wrong images, 1.5 B fresh G samples; the "
                                      "paper's text is char-CNN-RNN (--text-embeddings)",
                          reference="reedscot/icml2016 scripts/train_cub.sh with main_cls_int.lua",
                          stand_in=dict(_BIRDS_1024, image_size=64)),
        "coco-paper": dict(_PAPER_RUN, gf_dim=196, df_dim=196, z_dim=100, proj_dim=128, batch_size=64, epochs=200,
                           steps=None, lr_g=2e-4, lr_d=2e-4, lr_decay_epochs=40, n_captions=3, wrong="images",
                           cls_weight=0.5, interp=False, interp_beta=0.5, interp_weight=1.0, g_batch="fresh",
                           layout="coco", ema=False, train_style_encoder=False, snapshot_every=1000,
                           description="GAN-CLS on COCO: 64 px, ngf = ndf = 196, batch 64, 200 epochs, lr halved "
                                       "every 40, the mean of 3 captions, wrong images, no interpolation, "
                                       "main_cls.lua's D (layout coco)",
                           reference="reedscot/icml2016 scripts/train_coco.sh with main_cls.lua",
                           stand_in=dict(_BIRDS_1024, image_size=64)),
    },
}
for _kind, _presets in PAPER_PRESETS.items():
    PRESETS[_kind].update(_presets)


def preset_values(kind, name):
    """The dict of preset `name` of `t2i train KIND` (field values plus the non-field keys above). Raises
    ConfigError for an unknown preset, or one the reference has no configuration for (naming why)."""
    presets = PRESETS.get(kind, {})
    if name not in presets:
        raise ConfigError(f"--preset {name!r}: choose from {', '.join(presets) or 'none'}")
    if "unavailable" in presets[name]:
        raise ConfigError(f"--preset {name}: {presets[name]['unavailable']}")
    return presets[name]


_NOT_KNOBS = ("description", "reference", "stand_in", "unavailable", "prompts")


def _help_value(v):
    return "on" if v is True else "off" if v is False else "none" if v is None else f"{v:g}" if isinstance(v, float) \
        else str(v)


def preset_help(kind, skip=()):
    """One sentence per preset of KIND (but those in `skip`) for --help: its description and the reference file."""
    lines = []
    for name, p in PRESETS.get(kind, {}).items():
        if name in skip:
            continue
        what = p.get("unavailable") or p.get("description", "")
        if "reference" in p:
            what += f" ({p['reference']})"
        elif "unavailable" not in p:  # t2i's own presets: the options they set, so --help cannot drift from them
            knobs = [f"{flag_of(k)} {_help_value(v)}" for k, v in p.items() if k not in _NOT_KNOBS]
            what += (": " + ", ".join(knobs)) if knobs else ""
        lines.append(f"{name}: {what}.")
    return " ".join(lines)


def load_config_file(path, kind):
    """The dict of a RUN/config.json (or any such file) for `t2i train KIND --config PATH`. Raises ConfigError naming
    the file if it is unreadable, not a KIND config, or has options KIND does not know."""
    file = os.path.join(path, "config.json") if os.path.isdir(path) else path
    try:
        with open(file, encoding="utf-8") as f:
            d = json.load(f)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"--config {file}: unreadable ({exc})") from None
    if not isinstance(d, dict):
        raise ConfigError(f"--config {file}: not a JSON object of training options")
    if d.get("kind", kind) != kind:
        raise ConfigError(f"--config {file}: a {d.get('kind')} run's config; rerun it with `t2i train {d.get('kind')}`")
    CONFIGS[kind].from_dict(d, where=f"--config {file}")  # unknown keys are refused here
    return d
