"""`t2i sample`: generate images from captions (needs a generator trainer, not in this version yet)."""

import click


@click.command(context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def sample(args):
    """Generate images from captions with a trained AttnGAN/StackGAN model.

    Not available in this version: it arrives with the AttnGAN trainer.
    """
    raise click.UsageError("t2i sample is not built yet: it needs the AttnGAN trainer (`t2i train attngan`), "
                           "which this version does not have")
