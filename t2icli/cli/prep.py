"""`t2i prep`: turn a data source into a prepared dataset folder (parsing only; work is in t2icli.data)."""

import click

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
@click.option("--grammar", default="2", show_default=True, type=click.Choice(["1", "2"]),
              help="Caption grammar: 2 phrases the facts in many word orders, clauses and synonyms (bill, head, "
                   "breast, plumage, tiny, grey ...); 1 is the original grammar (folders prepared before "
                   "version 2 existed). Images and attributes are the same under both.")
def toybirds(out, size, n_train, n_test, captions_per_image, seed, workers, grammar):
    """The embedded procedural bird data set, with CUB-style captions and true attributes.

    \b
    Example:
      t2i prep toybirds --out data/toybirds
      t2i prep toybirds --out /tmp/tb --n-train 200 --n-test 50
      t2i prep toybirds --out data/toybirds-g1 --grammar 1
    """
    from t2icli.data.toybirds import prepare_toybirds

    summary = prepare_toybirds(out, size=size, n_train=n_train, n_test=n_test,
                               captions_per_image=captions_per_image, seed=seed, workers=workers,
                               grammar=int(grammar))
    _report(summary)


# --- real data sets: cub, flowers, coco, folder -------------------------------------------

def _dir_option(flag, help):
    return click.option(flag, required=True, metavar="DIR", help=help,
                        type=click.Path(exists=True, file_okay=False, dir_okay=True))


SIZE = click.option("--size", default=256, show_default=True, metavar="PX", type=click.IntRange(min=16),
                    help="Image size the models train at (the generator's final side), in pixels.")
STORED = click.option("--stored-size", default=None, metavar="PX", type=click.IntRange(min=16),
                      help="Side the images are stored at (>= --size); training resizes and random-crops from it.  "
                           "[default: int(size*76/64), and at least 355 from --size 256 up, so that neither "
                           "AttnGAN's 256 crops of 304 nor DAMSM's 299 crops of 355 are upsampled]")
VOCAB = click.option("--vocab", "vocab_from", default="train+test", show_default=True,
                     type=click.Choice(["train+test", "train"]),
                     help="Captions the vocabulary is built from: train+test as AttnGAN's build_dictionary, or "
                          "train only.")
WORKERS = click.option("--workers", default=2, show_default=True, metavar="N", type=click.IntRange(min=1),
                       help="Image decoding processes (the output does not depend on it).")


@prep.command()
@_dir_option("--root", "The CUB_200_2011 folder (images.txt, bounding_boxes.txt, images/).")
@_dir_option("--captions", "Captions: Reed et al.'s (text_c10/ + trainvalclasses.txt, testclasses.txt) "
                           "or AttnGAN's (text/ + train/filenames.pickle, test/filenames.pickle).")
@OUT
@SIZE
@STORED
@VOCAB
@WORKERS
def cub(root, captions, out, size, stored_size, vocab_from, workers):
    """CUB-200-2011 birds, cropped around each bird's box as AttnGAN does, class-disjoint split.

    The caption layout is detected; the split is StackGAN/AttnGAN's (8855 train / 2933 test
    images from 150 / 50 classes). Class ids are the CUB species (001.* -> 0). A box clipped by
    the image border keeps its aspect ratio (its centred square is stored, never stretched).

    \b
    Example:
      t2i prep cub --root CUB_200_2011 --captions birds --out data/cub --size 256
    """
    from t2icli.data.cub import prepare_cub

    summary = prepare_cub(root, captions, out, size=size, workers=workers, stored_size=stored_size,
                          vocab_from=vocab_from)
    _report(summary)


@prep.command()
@_dir_option("--root", "Folder of Oxford-102 images image_00001.jpg ... (the jpg/ folder).")
@_dir_option("--captions", "Reed et al.'s flowers captions: text_c10/class_00001/image_00001.txt ... "
                           "with trainvalclasses.txt and testclasses.txt.")
@OUT
@SIZE
@STORED
@WORKERS
def flowers(root, captions, out, size, stored_size, workers):
    """Oxford-102 flowers with Reed et al.'s captions; centre square crop (no boxes), class split.

    \b
    Example:
      t2i prep flowers --root 102flowers/jpg --captions cvpr2016_flowers --out data/flowers
    """
    from t2icli.data.flowers import prepare_flowers

    summary = prepare_flowers(root, captions, out, size=size, workers=workers, stored_size=stored_size)
    _report(summary)


@prep.command()
@_dir_option("--root", "COCO folder with train2014/, val2014/ and annotations/captions_*2014.json.")
@OUT
@SIZE
@STORED
@VOCAB
@click.option("--limit", default=None, metavar="N", type=click.IntRange(min=1),
              help="Keep only the first N images (by image id) of each split.  [default: all]")
@WORKERS
def coco(root, out, size, stored_size, vocab_from, limit, workers):
    """MS-COCO 2014 captions: train2014 -> train, val2014 -> test; 5 captions per image.

    Class id = image id (COCO has no caption classes: only the image itself is masked
    as a negative). Centre square crop.

    \b
    Example:
      t2i prep coco --root coco --out data/coco
      t2i prep coco --root coco --out data/coco-small --limit 2000
    """
    from t2icli.data.coco import prepare_coco

    summary = prepare_coco(root, out, size=size, limit=limit, workers=workers, stored_size=stored_size,
                           vocab_from=vocab_from)
    _report(summary)


@prep.command()
@_dir_option("--root", "Folder of images (.jpg .jpeg .png .bmp .webp, recursive), each with a same-stem .txt "
                       "of captions (one per line).")
@OUT
@click.option("--test-fraction", default=0.1, show_default=True, metavar="F",
              type=click.FloatRange(0, 1, min_open=True, max_open=True),
              help="Fraction of the images held out as the test split.")
@SIZE
@STORED
@click.option("--seed", default=0, show_default=True, metavar="INT", type=click.IntRange(min=0),
              help="Seed of the test split choice.")
@click.option("--word-limit", default=18, show_default=True, metavar="N", type=click.IntRange(min=1),
              help="Words per caption used in training (longer captions are cut as AttnGAN does).")
@WORKERS
def folder(root, out, test_fraction, size, stored_size, seed, word_limit, workers):
    """Your own images: any folder of images with a same-stem .txt of captions beside each.

    Class id = the image's sub-folder (top-level files share class 0). EXIF orientation is
    applied, then a centre square crop.

    \b
    Example:
      t2i prep folder --root my_images --out data/mine --test-fraction 0.1 --size 128
    """
    from t2icli.data.folder import prepare_folder

    summary = prepare_folder(root, out, size=size, test_fraction=test_fraction, seed=seed,
                             word_limit=word_limit, workers=workers, stored_size=stored_size)
    _report(summary)
