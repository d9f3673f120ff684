"""The `t2i` command line: a Click group whose sub-commands are imported only when run."""

import importlib

import click

# name -> (module, attribute, one-line help). Listing the help here keeps `t2i --help`
# instant: no sub-command module (and so no torch) is imported to print it.
_COMMANDS = {
    "prep": ("t2icli.cli.prep", "prep", "Prepare a data set (toybirds, cub, flowers, coco, folder)."),
    "train": ("t2icli.cli.train", "train", "Train a model (damsm, attngan, stackgan2, stackgan, gancls)."),
    "sample": ("t2icli.cli.sample", "sample", "Generate images from captions with a trained model."),
    "eval": ("t2icli.cli.eval", "eval_cmd", "Evaluate a model (rprecision, is, fid, attr)."),
    "serve": ("t2icli.cli.serve", "serve", "Serve a web page and JSON API to sample a model interactively."),
    "env": ("t2icli.cli.env", "env", "Print versions, devices and the active kernel backend."),
}


class LazyGroup(click.Group):
    """A group that imports a sub-command's module only when that sub-command is used."""

    def __init__(self, *args, lazy=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.lazy = dict(lazy or {})

    def list_commands(self, ctx):
        return sorted(set(super().list_commands(ctx)) | set(self.lazy))

    def invoke(self, ctx):
        """Run the command; a user error (t2icli.errors.T2IError, or an OSError such as a full disk or a read-only
        folder) becomes its one-line message and exit status 1 (2 for a bad option, ConfigError), without a
        traceback. The one place they are caught."""
        from t2icli.errors import ConfigError, T2IError

        try:
            return super().invoke(ctx)
        except ConfigError as exc:
            raise click.UsageError(str(exc)) from None
        except T2IError as exc:
            raise click.ClickException(str(exc)) from None
        except OSError as exc:
            where = f"{exc.filename}: " if exc.filename else ""
            code = f" (errno {exc.errno})" if exc.errno else ""
            raise click.ClickException(f"{where}{exc.strerror or exc}{code}") from None

    def get_command(self, ctx, name):
        if name in self.lazy:
            module, attr, _ = self.lazy[name]
            return getattr(importlib.import_module(module), attr)
        return super().get_command(ctx, name)

    def format_commands(self, ctx, formatter):
        rows = [(name, self.lazy[name][2]) for name in self.list_commands(ctx) if name in self.lazy]
        rows += [(n, self.commands[n].get_short_help_str()) for n in self.commands if n not in self.lazy]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


@click.group(cls=LazyGroup, lazy=_COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="t2icli", prog_name="t2i")
def main():
    """t2i: train, sample and evaluate text-to-image GANs.

    \b
    The whole job, end to end:
      t2i prep toybirds --out data/toybirds
      t2i train damsm --data data/toybirds --out runs/damsm
      t2i train attngan --data data/toybirds --damsm runs/damsm --out runs/attngan --stages 3
      t2i sample "a small red bird" --model runs/attngan --out red.png
      t2i eval --metric rprecision --model runs/attngan --data data/toybirds --json
    """
