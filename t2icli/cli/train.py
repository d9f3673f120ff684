"""`t2i train`: the training commands (parsing only: each builds its config and calls t2icli.training.KIND.train)."""

import click

from t2icli.cli.train_options import build_config, option, print_dry_run, report, run_options
from t2icli.training.config import DAMSMTrainConfig as _C


@click.group()
def train():
    """Train a model into a run folder (damsm first; attngan, stackgan2, stackgan, gancls use it).

    Every run folder holds config.json, the exact options of the run: `--config RUN/config.json`
    reruns it (options given on the command line override it).

    \b
    Examples:
      t2i train damsm --data data/toybirds --out runs/damsm
      t2i train damsm --data data/toybirds --out runs/damsm --resume latest
      t2i train attngan --config runs/attngan/config.json --out runs/attngan-seed1 --seed 1
    """


@train.command()
@run_options(_C, batch_help="Global batch size: under torchrun it is split over the processes (must be divisible by "
                            "their number) and the negatives of a caption are the whole global batch.",
             compile_help="Wrap the image encoder in torch.compile (slow first step; faster steps on GPU).",
             precision_help="bf16: autocast the image encoder's forward pass on CUDA, and on a CPU with native "
                            "bf16 (AVX512-BF16 or AMX; `t2i env` says); ignored on other CPUs. Text encoder and "
                            "loss stay fp32.",
             checkpoint_help="Also checkpoint every STEPS steps within an epoch (default: at the end of each epoch "
                             "only; useful when an epoch is long, e.g. COCO).")
@option(_C, "epochs", "N", "Number of epochs.")
@option(_C, "steps", "N", "Stop after N optimiser steps in total (counting resumed ones).")
@option(_C, "lr", "LR", "Adam learning rate; x0.98 per epoch, not below lr/10.")
@option(_C, "image_encoder", None, "small: compact CNN trained from scratch; inception_v3: frozen ImageNet "
                                   "Inception-v3 (needs --inception-weights).")
@option(_C, "inception_weights", "PATH", "torchvision inception_v3 ImageNet state dict (.pth) for --image-encoder "
                                         "inception_v3.")
@option(_C, "small_width", "C", "Channels of the small encoder's first stage (doubled per stage); 16 learns fastest "
                                "per minute on a 2-core CPU.")
@option(_C, "small_grid", "N", "Side of the small encoder's local-feature grid, the regions the words attend to "
                               "(a power of two; 8: 8x8 regions of 8 px at 64 px; 16 sees finer parts with one stage "
                               "less of depth).")
@option(_C, "gamma1", "G", "DAMSM attention sharpness over regions.")
@option(_C, "gamma2", "G", "DAMSM word-score aggregation sharpness.")
@option(_C, "gamma3", "G", "DAMSM softmax scale of the matching scores.")
@option(_C, "eval_every", "EPOCHS", "Evaluate the test split (losses, R-precision, attention maps) every this many "
                                    "epochs.")
@option(_C, "word_limit", "N", "Cut training captions to N words (default: the data set's limit; AttnGAN's COCO DAMSM "
                               "reads 15, its GAN 12).")
@option(_C, "backbone_batch_stats", None, "Let the frozen Inception-v3 backbone's BatchNorm follow training mode, as "
        "AttnGAN's pretrain_DAMSM.py (cnn_model.train()): it normalises with batch statistics and its running "
        "statistics drift toward the data, which the GAN later uses. Its weights stay frozen either way.")
@option(_C, "reset_adam", None, "A new Adam at every epoch (its moments and step counts reset), as AttnGAN's "
        "pretrain_DAMSM.py; a run resumed mid-epoch keeps its checkpoint's moments.")
@option(_C, "class_mask", None, "Never count two images of the same class as each other's negatives (AttnGAN's "
        "words_loss / sent_loss, on by default). --no-class-mask makes every other image a negative: on toybirds, "
        "whose classes are only body x wing colour, the mask hides every pair that differs only in crown, belly, "
        "beak, size or background.")
@option(_C, "dropout", "P", "Dropout on the text encoder's word embeddings (AttnGAN's RNN_ENCODER drop_prob 0.5, "
                           "the default).")
@option(_C, "hard_negatives", "K", "Also score each image against K copies of its caption with one colour, size, "
        "beak-length, scene or body-part word changed (not in AttnGAN; default 0): other birds' captions mostly differ "
        "in the class colours, these differ in one fact, so the encoders must read every word a caption states.")
@option(_C, "swap_negatives", "K", "Also score each image against K copies of its caption with two colour words "
        "exchanged (\"a red bird with blue wings\" -> \"a blue bird with red wings\"; not in AttnGAN; default 0): the "
        "same words, so only an encoder that binds each colour to its part tells them from the caption.")
@option(_C, "natural_edits", None, "Keep only hard negatives whose new word makes bigrams and trigrams that the "
        "training captions have (not in AttnGAN; default off): \"at night\" is never edited into \"at sky\", a "
        "caption no image has, which the encoders learn to reject from its text alone.")
@option(_C, "word_shuffle", "K", "Permute each training caption's words locally, none by more than K places (the "
        "word-order noise of Lample et al. 2018; not in AttnGAN; default 0 = off; K may be fractional: with 1, two "
        "neighbours swap one time in 8, with 0.5 one time in 18), so that people's phrasings (\"wings blue\", \"some blue on the wings\") read as the data set's. "
        "The hard negatives are edited from the permuted caption.")
@option(_C, "word_prediction", "W", "Add W times a masked-word loss (not in AttnGAN; default 0 = off): a small head, "
        "trained beside the encoders and not exported, names each caption word from its neighbours and the image "
        "regions they attend to (\"a red bird with blue wings and a green ___\" is answered at the beak), so the image "
        "encoder's regions keep every part's colour, which the matching loss alone does not ask for.")
@click.pass_context
def damsm(ctx, **params):
    """Train the DAMSM text and image encoders (AttnGAN's matching model).

    Writes RUN/damsm.pt (both encoders + config + vocabulary) for `train attngan`, `sample` and
    `eval`; prints the real-image test R-precision on stdout at the end.

    \b
    Examples:
      t2i train damsm --data data/toybirds --out runs/damsm --max-minutes 3
      t2i train damsm --data data/toybirds --out runs/damsm --resume latest --epochs 50
      t2i train damsm --data data/cub --out runs/damsm-cub --image-encoder inception_v3 \\
          --inception-weights inception_v3_google-0cc3c7bd.pth
      torchrun --standalone --nproc_per_node=4 -m t2icli train damsm --data data/cub --out runs/damsm-cub \\
          --image-encoder inception_v3 --inception-weights inception_v3_google-0cc3c7bd.pth --batch-size 192
      t2i train damsm --data data/cub --out runs/damsm-cub --preset cub-paper \\
          --inception-weights inception_v3_google-0cc3c7bd.pth
      t2i train damsm --preset coco-paper --dry-run
    """
    from t2icli.training.damsm import train as train_damsm

    dry = params.get("dry_run")
    cfg, resume, progress = build_config(ctx, "damsm", params)
    if dry:
        print_dry_run(cfg)
        return
    result = train_damsm(cfg, resume=resume, progress=progress)
    report(result, "the test split has too few images of other classes", what="real test images", counted="images")


# The GAN trainers live in their own module; they join this group here.
from t2icli.cli.train_gan import attngan, gancls, stackgan, stackgan2  # noqa: E402

for _command in (attngan, stackgan2, stackgan, gancls):
    train.add_command(_command)
