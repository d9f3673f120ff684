"""`t2i serve`: a web page and a JSON API to type captions and see a trained generator's images (FastAPI + uvicorn).

engine.py answers requests (framework-free), card.py describes the loaded model, app.py is the web app and static/
holds the page (plain HTML/JS/CSS, nothing loaded from the internet). FastAPI and uvicorn are an optional extra
(`pip install -e .[serve]`): nothing else in t2i needs a web framework.
"""

import ipaddress
import socket

from t2icli.serve.engine import LIMITS, Engine, ServeError

__all__ = ["INSTALL_HINT", "LIMITS", "Engine", "ServeError", "require_web", "open_socket", "is_loopback", "build_app",
           "run_app", "serve"]

INSTALL_HINT = ("t2i serve needs FastAPI and uvicorn, an optional extra of t2i: pip install fastapi uvicorn "
                "(or, in the t2i checkout: pip install --no-build-isolation --use-pep517 -e '.[serve]')")


def require_web():
    """Raise ServeError with the install command unless FastAPI and uvicorn can be imported."""
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise ServeError(f"{INSTALL_HINT} ({exc})") from None


def open_socket(host, port):
    """A TCP socket bound to (host, port), ready for uvicorn (port 0: a free port the OS picks; read it with
    sock.getsockname()[1]). Binding here, before the model is loaded, turns a busy port or an unknown host into a
    ServeError naming --port / --host at once, and leaves no window in which another process could take the port."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ServeError(f"--host {host}: not an address of this machine ({exc.strerror})") from None
    family, _, _, _, addr = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: restart at once after Ctrl-C
    try:
        sock.bind(addr)
    except OSError as exc:
        sock.close()
        raise ServeError(f"--port {port} on --host {host}: cannot listen there ({exc.strerror or exc}); "
                         "choose another --port (0 picks a free one)") from None
    return sock


def is_loopback(sock):
    """True when the socket is bound to a loopback address (127.0.0.0/8 or ::1): only this machine can connect."""
    return ipaddress.ip_address(sock.getsockname()[0].split("%")[0]).is_loopback


def build_app(model_run, device="cpu", pretrained=False):
    """Load the generator at model_run (a run folder or its generator.pt) and build the web app.

    Returns (app, engine). Raises a T2IError subclass naming --model when the model cannot be loaded."""
    from t2icli.metrics.generate import load_model
    from t2icli.serve.app import create_app
    from t2icli.serve.card import model_card

    model = load_model(model_run, device)
    engine = Engine(model, model_card(model, model_run, pretrained=pretrained))
    return create_app(engine), engine


def run_app(app, sock):
    """Serve `app` on the bound socket until interrupted (Ctrl-C / SIGTERM). Only warnings and errors are logged:
    each request's line would drown the terminal during a load test."""
    import uvicorn

    uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])


def serve(model_run, host="127.0.0.1", port=8000, device="cpu", pretrained=False, log=print):
    """`t2i serve`: check the web extra, bind (host, port), load the model, serve until interrupted.

    log(message) receives the warnings (a host that is not loopback) and the line with the page's address."""
    require_web()
    sock = open_socket(host, port)
    try:
        if not is_loopback(sock):
            log(f"warning: --host {host} is not a loopback address: anyone who can reach this machine on port "
                f"{sock.getsockname()[1]} can use the page and the API (there is no authentication)")
        app, engine = build_app(model_run, device, pretrained)
        bound, card = sock.getsockname(), engine.card
        shown = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
        which = "the shipped pretrained model" if pretrained else "model"
        log(f"t2i serve: {card['kind']} {which} {card['run']} on {card['device']}; open http://{shown}:{bound[1]}/ "
            "(Ctrl-C stops)")
        if not card["captions"]:
            log(f"warning: {card['captions_error']}")
        run_app(app, sock)
    finally:
        sock.close()
