"""`t2i serve`: a local web page (and JSON API) to type captions and see a trained generator's images."""

import click

from t2icli.cli.common import err, model_or_pretrained, resolve_device


@click.command()
@click.option("--model", "model_run", default=None, metavar="RUN", type=click.Path(exists=True),
              help="Generator run folder (or its generator.pt) from `t2i train attngan|stackgan2|stackgan|gancls`. "
                   "Default: the shipped pretrained toybirds model, when this t2i has one.")
@click.option("--host", default="127.0.0.1", show_default=True, metavar="ADDR",
              help="Address to listen on. Anything but loopback (127.0.0.1, ::1) lets other machines in: a warning.")
@click.option("--port", default=8000, show_default=True, metavar="PORT", type=click.IntRange(0, 65535),
              help="TCP port; 0 picks a free one (printed on stderr).")
@click.option("--device", default="auto", show_default=True, metavar="DEV", help="auto, cpu, cuda, cuda:1, ...")
def serve(model_run, host, port, device):
    """Serve a page to type captions and see the images of every stage, the per-word attention maps
    and interpolations between two captions, with the JSON API behind it (README: "t2i serve").

    Needs the web extra: pip install fastapi uvicorn. Stop it with Ctrl-C.

    \b
    Examples:
      t2i serve --model runs/attngan                  # then open http://127.0.0.1:8000/
      t2i serve --model runs/attngan --port 0         # any free port
      curl -s http://127.0.0.1:8000/api/model
      curl -s -X POST http://127.0.0.1:8000/api/sample -H 'content-type: application/json' \\
           -d '{"captions": ["a small red bird"], "n": 4, "seed": 0}'
    """
    from t2icli.serve import require_web, serve as serve_fn

    require_web()  # before anything slow: the install command is the first thing a user without the extra sees
    model_run, pretrained = model_or_pretrained(model_run, "serve")
    serve_fn(model_run, host=host, port=port, device=resolve_device(device), pretrained=pretrained, log=err)
