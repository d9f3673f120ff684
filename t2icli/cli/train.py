"""`t2i train`: the training commands (parsing and validation only; the loops live in t2icli.training)."""

import click

from t2icli.cli.common import err, resolve_device
from t2icli.cli.gan_options import check_resume


@click.group()
def train():
    """Train a model into a run folder (damsm first; attngan, stackgan2, stackgan, gancls use it).

    \b
    Examples:
      t2i train damsm --data data/toybirds --out runs/damsm
      t2i train damsm --data data/toybirds --out runs/damsm --resume latest
    """


@train.command()
@click.option("--data", required=True, metavar="DIR", type=click.Path(exists=True, file_okay=False),
              help="Prepared dataset folder (from `t2i prep`).")
@click.option("--out", required=True, metavar="RUN", type=click.Path(file_okay=False),
              help="Run folder to create (or to continue with --resume latest).")
@click.option("--epochs", default=600, show_default=True, metavar="N", type=click.IntRange(min=1),
              help="Number of epochs.")
@click.option("--batch-size", default=48, show_default=True, metavar="B", type=click.IntRange(min=2),
              help="Global batch size: under torchrun it is split over the processes (must be divisible by their "
                   "number) and the negatives of a caption are the whole global batch.")
@click.option("--lr", default=0.002, show_default=True, metavar="LR", type=click.FloatRange(min=0, min_open=True),
              help="Adam learning rate; x0.98 per epoch, not below lr/10.")
@click.option("--image-encoder", default="small", show_default=True, type=click.Choice(["small", "inception_v3"]),
              help="small: compact CNN trained from scratch; inception_v3: frozen ImageNet Inception-v3 "
                   "(needs --inception-weights).")
@click.option("--inception-weights", default=None, metavar="PATH", type=click.Path(exists=True, dir_okay=False),
              help="torchvision inception_v3 ImageNet state dict (.pth) for --image-encoder inception_v3.")
@click.option("--device", default="auto", show_default=True, metavar="DEV",
              help="auto (cuda if available, else cpu), cpu, cuda, cuda:1, ...")
@click.option("--seed", default=0, show_default=True, metavar="INT", type=click.IntRange(min=0),
              help="Random seed (initialisation, data order, augmentation, dropout).")
@click.option("--resume", default=None, metavar="latest|PATH", callback=check_resume,
              help="Continue a run: 'latest' = newest checkpoint in --out, or a checkpoint file / run folder.")
@click.option("--max-minutes", default=None, metavar="MIN", type=click.FloatRange(min=0, min_open=True),
              help="Stop training after this many minutes (this invocation), then evaluate and export.")
@click.option("--steps", "max_steps", default=None, metavar="N", type=click.IntRange(min=1),
              help="Stop after N optimiser steps in total (counting resumed ones).")
@click.option("--small-width", default=16, show_default=True, metavar="C", type=click.IntRange(min=4),
              help="Channels of the small encoder's first stage (doubled per stage); 16 learns fastest per minute "
                   "on a 2-core CPU.")
@click.option("--gamma1", default=4.0, show_default=True, metavar="G", type=click.FloatRange(min=0, min_open=True),
              help="DAMSM attention sharpness over regions.")
@click.option("--gamma2", default=5.0, show_default=True, metavar="G", type=click.FloatRange(min=0, min_open=True),
              help="DAMSM word-score aggregation sharpness.")
@click.option("--gamma3", default=10.0, show_default=True, metavar="G", type=click.FloatRange(min=0, min_open=True),
              help="DAMSM softmax scale of the matching scores.")
@click.option("--eval-every", default=1, show_default=True, metavar="EPOCHS", type=click.IntRange(min=1),
              help="Evaluate the test split (losses, R-precision, attention maps) every this many epochs.")
@click.option("--workers", default=0, show_default=True, metavar="N", type=click.IntRange(min=0),
              help="Data-loading processes (0 = in the training process; best on a 2-core CPU).")
@click.option("--threads", default=0, show_default=True, metavar="N", type=click.IntRange(min=0),
              help="CPU threads for torch (0 = torch's default, one per core). 1 is faster on a busy machine.")
@click.option("--precision", default="fp32", show_default=True, type=click.Choice(["fp32", "bf16"]),
              help="bf16: autocast the image encoder's forward pass on CUDA (text encoder and loss stay fp32); "
                   "ignored on CPU.")
@click.option("--compile", "compile_", is_flag=True, default=False,
              help="Wrap the image encoder in torch.compile (slow first step; faster steps on GPU).")
@click.option("--keep", default=3, show_default=True, metavar="K", type=click.IntRange(min=1),
              help="Keep the latest K checkpoints in RUN/checkpoints.")
@click.option("--checkpoint-every", default=None, metavar="STEPS", type=click.IntRange(min=1),
              help="Also checkpoint every STEPS steps within an epoch (default: at the end of each epoch only; "
                   "useful when an epoch is long, e.g. COCO).")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show the progress bar on stderr.")
def damsm(data, out, epochs, batch_size, lr, image_encoder, inception_weights, device, seed, resume, max_minutes,
          max_steps, small_width, gamma1, gamma2, gamma3, eval_every, workers, threads, precision, compile_, keep,
          checkpoint_every, progress):
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
    """
    if image_encoder == "inception_v3" and inception_weights is None and resume is None:
        raise click.UsageError(
            "--image-encoder inception_v3 needs --inception-weights PATH (torchvision ImageNet weights): a randomly "
            "initialised frozen backbone is useless. Use --image-encoder small to train from scratch.")
    if image_encoder == "small" and inception_weights is not None:
        raise click.UsageError("--inception-weights is only used with --image-encoder inception_v3")
    from t2icli.data import load_meta

    load_meta(data)  # a clear error before anything heavy
    device = resolve_device(device)
    import torch

    if threads:
        torch.set_num_threads(threads)
    from t2icli.training.damsm import train_damsm

    result = train_damsm(data, out, epochs=epochs, batch_size=batch_size, lr=lr, image_encoder=image_encoder,
                         inception_weights=inception_weights, device=device, seed=seed, resume=resume,
                         max_minutes=max_minutes, max_steps=max_steps, gamma1=gamma1, gamma2=gamma2,
                         gamma3=gamma3, eval_every=eval_every, num_workers=workers, progress=progress,
                         small_width=small_width, precision=precision, compile=compile_, keep_checkpoints=keep,
                         checkpoint_every=checkpoint_every)
    if not result["is_main"]:
        return  # under torchrun only rank 0 reports
    sps = result["samples_per_s"]
    err(f"trained {result['step']} steps ({result['epoch']} epochs) in {result['train_seconds']:.0f} s"
        + (f", {sps:.0f} samples/s" if sps else "") + f"; export {result['export']}")
    rp = result["rprecision"]
    if rp is None:
        click.echo("R-precision: n/a (the test split has too few images of other classes)")
    else:
        click.echo(f"R-precision (real test images, {rp['n']} images, 1 true + {rp['n_negatives']} other-class "
                   f"captions, {len(rp['runs'])} runs): {rp['mean']:.4f} ± {rp['std']:.4f}")


# The GAN trainers live in their own modules; they join this group here.
from t2icli.cli.train_baselines import gancls, stackgan  # noqa: E402
from t2icli.cli.train_gan import attngan, stackgan2  # noqa: E402

for _command in (attngan, stackgan2, stackgan, gancls):
    train.add_command(_command)
