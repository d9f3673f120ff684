"""`t2i train attngan | stackgan2 | stackgan | gancls`: parse the options into the trainer's config, then train."""

import click

from t2icli.cli.train_options import (apply_options, build_config, gan_options, option, print_dry_run, report,
                                      run_options)
from t2icli.training.config import (AttnGANTrainConfig, GanClsTrainConfig, StackGAN2TrainConfig,
                                    StackGANTrainConfig)

__all__ = ["attngan", "stackgan2", "stackgan", "gancls"]


def _tree_options(cls):
    """The options of both multi-stage trainers."""
    opts = [
        run_options(cls, batch_help="Global batch size: under torchrun it is split over the processes (must be "
                                    "divisible by their number).",
                    compile_help="Wrap G and every D in torch.compile (slow first step; faster steps on GPU).",
                    precision_help="bf16: autocast the forward passes on CUDA, and on a CPU with native bf16 "
                                   "(AVX512-BF16 or AMX; `t2i env` says), where it is faster; ignored on other "
                                   "CPUs. Losses stay fp32.",
                    checkpoint_help="Write a full-state checkpoint every this many steps.  [default: --snapshot-every]"),
        gan_options(cls, gf_help="Generator width: channels of every h_i (the first 4x4 block has 16x that).",
                    df_help="Discriminator width (its 4x4 code has 8x that)."),
        option(cls, "stages", "S", "Generator stages; each doubles the side, the last equals the data's image size; "
                                   "the first must be >= 16 px (64 px data: up to 3 stages, 16/32/64)."),
        option(cls, "steps", "N", "Train N optimiser steps in total (counting resumed ones). Default: --epochs 600."),
        option(cls, "epochs", "N", "Train N epochs (instead of --steps)."),
        option(cls, "cond_dim", "N", "Conditioning-augmentation code dimension."),
        option(cls, "r_num", "N", "Residual blocks of every next stage (the references' GAN.R_NUM: 2 for CUB, 3 for "
                                  "COCO)."),
        option(cls, "kl_weight", "W", "Weight of the conditioning-augmentation KL term (AttnGAN 1, StackGAN++ 2)."),
        option(cls, "r1_gamma", "GAMMA", "R1 gradient penalty on every discriminator's real images (GAMMA/2 * "
                                         "E||grad D||^2; 0 = none, as the papers). Keeps D from overpowering a young "
                                         "G: on toybirds it is what makes short CPU runs draw bird shapes instead of "
                                         "streaks."),
        option(cls, "r1_every", "K", "Lazy R1 (as StyleGAN2): compute the penalty on every K-th step only, weighted "
                                     "K times (its double backward is the dearest part of a D step)."),
        option(cls, "lr_decay_steps", "N", "Over the run's last N steps, lower --lr-g and --lr-d linearly towards 0 "
                                           "(the last step's is 1/N of them). Default: constant, as the references."),
        option(cls, "standing_stats", "N", "Snapshots and the export sample from G (its EMA copy) with BatchNorm "
                                           "statistics re-estimated on N training captions with fresh noise, in "
                                           "training batches (BigGAN's standing statistics). Default 0: the trained "
                                           "G's running statistics, as AttnGAN (whose weight average keeps them)."),
        option(cls, "color_consistency", None, "StackGAN++'s colour-consistency regulariser between consecutive "
                                               "stages' images (pixel mean and covariance, weighted by "
                                               "--cc-lambda1 / --cc-lambda2; StackGAN-v2 trainer.py:631-657). "
                                               "AttnGAN has none: its last stage may repaint what the "
                                               "earlier ones drew."),
        option(cls, "cc_lambda1", "W", "Colour consistency: weight of the pixel-mean term (StackGAN-v2's "
                                       "TRAIN.COEFF.COLOR_LOSS: 0 in its birds config, 50 in its *_color.yml)."),
        option(cls, "cc_lambda2", "W", "Colour consistency: weight of the covariance term (StackGAN-v2: 5 x "
                                       "COLOR_LOSS, so 250 with its *_color.yml)."),
        option(cls, "cc_detach", None, "Colour consistency against the smaller stage's detached statistics, as "
                                       "StackGAN-v2's trainer.py (else both stages move toward each other)."),
    ]
    return lambda fn: apply_options(fn, opts)


def _baseline_options(cls, batch_default_help):
    """The options of GAN-INT-CLS and StackGAN v1."""
    opts = [
        run_options(cls, batch_help=batch_default_help, compile_help="Wrap G and D (StackGAN: both Ds) in "
                    "torch.compile (slow first step; faster steps on GPU).",
                    precision_help="bf16: autocast the forward passes on CUDA, and on a CPU with native bf16 "
                                   "(AVX512-BF16 or AMX; `t2i env` says), where it is faster; ignored on other "
                                   "CPUs. Losses stay fp32.",
                    checkpoint_help="Write a full-state checkpoint every this many steps.  [default: --snapshot-every]"),
        gan_options(cls, gf_help="Generator width (ngf).", df_help="Discriminator width (ndf; its 4x4 code has up to "
                                                                    "8x that)."),
        _text_embeddings_option(cls),
        option(cls, "lr_decay_epochs", "N", "Halve --lr-g and --lr-d every N epochs (GAN-INT-CLS: from epoch N on, "
                                            "as main_cls_int.lua; StackGAN: every N epochs of each stage). Default: "
                                            "never."),
    ]
    return lambda fn: apply_options(fn, opts)


def _text_embeddings_option(cls):
    return option(cls, "text_embeddings", "PATH", "StackGAN's char-CNN-RNN-embeddings.pickle of the training split "
                  "(per image E x 1024, in the order of the filenames.pickle beside it, or of the split's images): "
                  "condition on the papers' original embeddings instead of the DAMSM sentence features. Such a model "
                  "cannot embed new captions: `t2i sample` refuses it, `t2i eval` needs the test split's embeddings "
                  "(its --text-embeddings).")


def _train(ctx, kind, params, none_reason):
    """Build the config (a preset's prompts do not apply under --text-embeddings), then train and report, or print
    the dry run."""
    from importlib import import_module

    skip = ("prompts",) if params.get("text_embeddings") is not None else ()
    dry = params.get("dry_run")
    cfg, resume, progress = build_config(ctx, kind, params, skip_preset=skip)
    if dry:
        print_dry_run(cfg)
        return
    module = import_module(f"t2icli.training.{'attngan' if kind == 'stackgan2' else kind}")
    report(module.train(cfg, resume=resume, progress=progress), none_reason)


@click.command()
@_tree_options(AttnGANTrainConfig)
@option(AttnGANTrainConfig, "damsm_weight", "LAMBDA", "Weight of the DAMSM word+sentence loss on the final stage (5 "
                                                      "for birds-like data, 50 for COCO).")
@option(AttnGANTrainConfig, "damsm_augment", None, "Score every final image for the DAMSM term after a random shift "
        "(up to 1/8 of its side) and mirroring, so G cannot satisfy the frozen image encoder with colour streaks "
        "drawn anywhere.")
@option(AttnGANTrainConfig, "class_mask", None, "Mask same-class pairs out of the DAMSM term's negatives (AttnGAN's "
        "losses.py, on by default); --no-class-mask as in `t2i train damsm`.")
@option(AttnGANTrainConfig, "hard_negatives", "K", "Also score each final image in the DAMSM term against K copies of "
        "its caption with one colour, size, beak-length, scene or body-part word changed (not in AttnGAN; default 0), "
        "as `t2i train damsm --hard-negatives`: the term then asks G for every fact its caption states, not only the "
        "class colours.")
@option(AttnGANTrainConfig, "edited_wrong", "SHARE", "Make this share (0-1) of D's wrong pairs the real image with its "
        "own caption, one colour, size, beak-length, scene or body-part word changed, instead of another sample's "
        "caption (AttnGAN's only wrong pair; not in AttnGAN; default 0): D then rejects a bird whose caption is wrong "
        "in one fact, so G is asked for that fact by D too, not only by the DAMSM term.")
@option(AttnGANTrainConfig, "natural_edits", None, "Both kinds of edited captions (--hard-negatives, --edited-wrong) "
        "keep only edits whose new word makes bigrams and trigrams that the training captions have (not in AttnGAN; "
        "default off): without it D learns to reject \"at sky\" or \"on the night\" from the text alone and never "
        "checks the background in the image.")
@click.pass_context
def attngan(ctx, **params):
    """Train an AttnGAN: attentional multi-stage generator + one discriminator per stage.

    Needs a DAMSM run on the same data (its frozen encoders give the word/sentence features,
    the DAMSM loss and the R-precision). Writes fakes<step>.png / attn<step>.png grids,
    stats.jsonl, checkpoints/ and RUN/generator.pt (EMA generator + text encoder + vocabulary,
    for `t2i sample`); prints the generated-image R-precision on test captions on stdout.

    \b
    Examples:
      t2i train attngan --data data/toybirds --damsm runs/damsm --out runs/attngan --preset toybirds-cpu
      t2i train attngan --data data/toybirds --damsm runs/damsm --out runs/attngan --stages 3 --steps 20000
      t2i train attngan --config runs/attngan/config.json --resume latest --steps 30000
      t2i train attngan --data data/cub --damsm runs/damsm-cub --out runs/attngan-cub --epochs 600 \\
          --device cuda --precision bf16
      torchrun --standalone --nproc_per_node=4 -m t2icli train attngan --data data/cub --damsm runs/damsm-cub \\
          --out runs/attngan-cub --batch-size 80 --device cuda --precision bf16 --compile
      t2i train attngan --data data/cub --damsm runs/damsm-cub --out runs/attngan-cub --preset cub-paper
      t2i train attngan --preset coco-paper --dry-run
    """
    _train(ctx, "attngan", params, "the test split has too few images of other classes")


@click.command()
@_tree_options(StackGAN2TrainConfig)
@option(StackGAN2TrainConfig, "d_condition", None, "What the Ds' conditional heads see: the sentence feature (as "
        "AttnGAN), or the conditioning-augmentation mean mu, detached in D's step, as StackGAN-v2.")
@option(StackGAN2TrainConfig, "wrong", None, "D's mismatched pairs: real images with another sample's caption (as "
        "AttnGAN), or images of another class with the right caption (StackGAN-v2's wrong images).")
@option(StackGAN2TrainConfig, "uncond_loss", "W", "StackGAN-v2's D loss with its UNCOND_LOSS weight W: real + wrong + "
        "fake, each plus W x its unconditional term (a wrong image is real there), and G's unconditional terms x W; "
        "W 0: real + (wrong + fake) / 2. Default (unset): AttnGAN's (real + u_real) / 2 + (fake + u_fake + wrong) / 3.")
@option(StackGAN2TrainConfig, "unconditional", None, "StackGAN-v2's unconditional mode (B_CONDITION False): G from "
        "noise alone, Ds with their unconditional head only, no KL; the captions are not used.")
@_text_embeddings_option(StackGAN2TrainConfig)
@click.pass_context
def stackgan2(ctx, **params):
    """Train a StackGAN++: the same multi-stage tree without attention or DAMSM loss.

    The generator is conditioned only on the sentence feature. StackGAN++ used a pretrained
    char-CNN-RNN text embedding, which cannot be downloaded here: the frozen text encoder of
    the DAMSM run given with --damsm stands in for it (its sentence feature only; the DAMSM
    image encoder is used just to report R-precision).

    \b
    Examples:
      t2i train stackgan2 --data data/toybirds --damsm runs/damsm --out runs/stackgan2 --preset toybirds-cpu
      t2i train stackgan2 --data data/toybirds --damsm runs/damsm --out runs/stackgan2 --steps 20000
      t2i train stackgan2 --data data/cub --damsm runs/damsm-cub --out runs/stackgan2-cub --preset cub-paper \\
          --text-embeddings Data/birds/train/char-CNN-RNN-embeddings.pickle
      t2i train stackgan2 --preset cub-paper --dry-run
    """
    _train(ctx, "stackgan2", params, "char-CNN-RNN conditioning, --unconditional, or too few test images of other "
                                     "classes")


@click.command()
@_baseline_options(GanClsTrainConfig, "Global batch size (its roll gives the mismatched captions): under torchrun "
                   "it is split over the processes (must be divisible by their number).")
@option(GanClsTrainConfig, "steps", "N", "Train N optimiser steps in total (counting resumed ones). Default: "
                                         "--epochs 600.")
@option(GanClsTrainConfig, "epochs", "N", "Train N epochs (instead of --steps).")
@option(GanClsTrainConfig, "proj_dim", "N", "The text feature is compressed to N by FC + leaky ReLU (in G and in D).")
@option(GanClsTrainConfig, "interp", None, "Manifold interpolation (GAN-INT): also train G on interpolated captions' "
                                           "features.")
@option(GanClsTrainConfig, "interp_beta", "BETA", "Interpolated feature beta * t1 + (1 - beta) * t2 of two captions "
                                                  "(--g-batch same).")
@option(GanClsTrainConfig, "interp_weight", "W", "Weight of the interpolated captions' term in G's loss.")
@option(GanClsTrainConfig, "n_captions", "K", "The text feature of an image: the mean of K of its captions' features, "
                                              "drawn with replacement (Reed's numCaption: 4 on CUB).")
@option(GanClsTrainConfig, "wrong", None, "D's mismatched pairs: real images with another sample's caption, or images "
                                          "of another class with the right caption (as the reference).")
@option(GanClsTrainConfig, "cls_weight", "W", "D's loss: real + W x wrong + (1 - W) x fake.")
@option(GanClsTrainConfig, "layout", None, "Networks: reference = main_cls_int.lua's (CUB, Flowers); coco = "
        "main_cls.lua's D (a LeakyReLU after its 3rd conv, no BatchNorm in its text projection); legacy = t2i's before "
        "issue 15 (resize-convolutions, no residual blocks).")
@option(GanClsTrainConfig, "g_batch", None, "G's samples: same = the D step's fakes plus as many on interpolated "
        "captions; fresh = as main_cls_int.lua, 1.5 B newly drawn samples, B on the batch's captions and B/2 on the "
        "means of its two halves' (weight --interp-weight), one BCE averaged over all.")
@option(GanClsTrainConfig, "train_style_encoder", None, "Also train the style encoder S(x) -> z (squared loss on "
                                                        "generated images) for `t2i sample --style-from IMAGE`.")
@click.pass_context
def gancls(ctx, **params):
    """Train GAN-INT-CLS (Reed and others, 2016): a DCGAN with a matching-aware discriminator.

    D learns (real image, right text) -> real, (real image, wrong text) and (fake image, right
    text) -> fake; G is also trained on interpolations of two captions' features. The text
    feature is the DAMSM sentence feature of --damsm (or, with --text-embeddings, StackGAN's
    char-CNN-RNN embeddings, as the paper). Writes fakes<step>.png, stats.jsonl, checkpoints/
    and RUN/generator.pt; prints the generated-image R-precision on stdout.

    \b
    Examples:
      t2i train gancls --data data/toybirds --damsm runs/damsm --out runs/gancls --preset toybirds-cpu
      t2i train gancls --data data/toybirds --damsm runs/damsm --out runs/gancls --steps 20000 --train-style-encoder
      t2i train gancls --data data/cub --damsm runs/damsm-cub --out runs/gancls-cub --epochs 600 \\
          --text-embeddings Data/birds/train/char-CNN-RNN-embeddings.pickle
      torchrun --standalone --nproc_per_node=2 -m t2icli train gancls --data data/cub --damsm runs/damsm-cub \\
          --out runs/gancls-cub --batch-size 128 --device cuda --precision bf16
      t2i train gancls --preset cub-paper --dry-run
    """
    _train(ctx, "gancls", params, "char-CNN-RNN conditioning, or too few test images of other classes")


@click.command()
@_baseline_options(StackGANTrainConfig, "Global batch size (its roll gives the mismatched captions): under torchrun "
                   "it is split over the processes (must be divisible by their number).")
@option(StackGANTrainConfig, "stage1_steps", "N", "Optimiser steps of the Stage-I GAN (a quarter of the final side).")
@option(StackGANTrainConfig, "stage2_steps", "N", "Optimiser steps of the Stage-II GAN (the data's side), Stage-I "
                                                  "frozen.")
@option(StackGANTrainConfig, "stage1_epochs", "N", "Train Stage-I for N epochs (replaces --stage1-steps).")
@option(StackGANTrainConfig, "stage2_epochs", "N", "Train Stage-II for N epochs (replaces --stage2-steps).")
@option(StackGANTrainConfig, "stage2_uncond", None, "Stage-II's D also scores with its unconditional logit, as "
        "StackGAN-Pytorch: D = (cond real + uncond real) / 2 + (cond fake + wrong + uncond fake) / 3, G + uncond.")
@option(StackGANTrainConfig, "cond_dim", "N", "Conditioning-augmentation code dimension.")
@option(StackGANTrainConfig, "res_blocks", "N", "Residual blocks of the Stage-II generator.")
@option(StackGANTrainConfig, "kl_weight", "W", "Weight of the conditioning-augmentation KL term.")
@click.pass_context
def stackgan(ctx, **params):
    """Train StackGAN (v1, Zhang and others, 2017): Stage-I, then Stage-II with Stage-I frozen.

    Stage-I draws a quarter-size sketch from noise and the conditioning-augmented text;
    Stage-II refines it to the data's size (64 -> 256 on CUB 256 px, 16 -> 64 on toybirds).
    --max-minutes is shared by the stages in proportion to their steps. Text features as
    `train gancls`.

    \b
    Examples:
      t2i train stackgan --data data/toybirds --damsm runs/damsm --out runs/stackgan --preset toybirds-cpu
      t2i train stackgan --data data/cub --damsm runs/damsm-cub --out runs/stackgan-cub \\
          --stage1-steps 60000 --stage2-steps 60000 --device cuda
      torchrun --standalone --nproc_per_node=4 -m t2icli train stackgan --data data/cub --damsm runs/damsm-cub \\
          --out runs/stackgan-cub --batch-size 64 --device cuda --precision bf16 --compile
      t2i train stackgan --preset coco-paper --dry-run
    """
    _train(ctx, "stackgan", params, "char-CNN-RNN conditioning, or too few test images of other classes")
