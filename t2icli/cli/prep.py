"""`t2i prep`: turn a data source into a prepared dataset folder (parsing only; work is in t2icli.data)."""

import click

from t2icli.cli.common import user_errors

OUT = click.option(
    "--out", required=True, metavar="DIR", type=click.Path(file_okay=False, writable=True),
    help="Folder to write the prepared dataset to (new, empty, or a prepared dataset to replace).",
)


def _report(summary):
    """One result line on stdout; the details as JSON-ish lines on stderr."""
    import json

    click.echo(json.dumps(summary, sort_keys=True))


@click.group()
def prep():
    """Prepare a data set into a folder that `t2i train` reads.

    \b
    Examples:
      t2i prep toybirds --out data/toybirds
      t2i prep cub --root CUB_200_2011 --captions birds --out data/cub
      t2i prep folder --root my_images --out data/mine
    """


@prep.command()
@OUT
@click.option("--size", default=64, show_default=True, metavar="PX", type=click.IntRange(min=16, max=1024),
              help="Image side in pixels.")
@click.option("--n-train", default=8000, show_default=True, metavar="N", type=click.IntRange(min=1),
              help="Number of training images.")
@click.option("--n-test", default=1000, show_default=True, metavar="N", type=click.IntRange(min=1),
              help="Number of test images.")
@click.option("--captions-per-image", default=10, show_default=True, metavar="K", type=click.IntRange(min=1, max=100),
              help="Captions drawn per image.")
@click.option("--seed", default=0, show_default=True, metavar="INT", type=click.IntRange(min=0),
              help="Random seed: the same seed gives byte-identical output.")
@click.option("--workers", default=2, show_default=True, metavar="N", type=click.IntRange(min=1),
              help="Drawing processes (the output does not depend on it).")
def toybirds(out, size, n_train, n_test, captions_per_image, seed, workers):
    """The embedded procedural bird data set, with CUB-style captions and true attributes.

    \b
    Example:
      t2i prep toybirds --out data/toybirds
      t2i prep toybirds --out /tmp/tb --n-train 200 --n-test 50
    """
    from t2icli.data.toybirds import prepare_toybirds

    with user_errors():
        summary = prepare_toybirds(out, size=size, n_train=n_train, n_test=n_test,
                                   captions_per_image=captions_per_image, seed=seed, workers=workers)
    _report(summary)
