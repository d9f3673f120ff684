"""`t2i eval`: metrics of a trained generator (needs a generator trainer, not in this version yet)."""

import click


@click.command("eval", context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def eval_cmd(args):
    """Evaluate a generator: R-precision, IS, FID, attribute accuracy.

    Not available in this version: it arrives with the AttnGAN trainer. The real-image
    retrieval R-precision of a DAMSM run is printed by `t2i train damsm` itself.
    """
    raise click.UsageError("t2i eval is not built yet: it needs a generator (`t2i train attngan`), "
                           "which this version does not have")
