"""The FastAPI app of `t2i serve`: the static page (t2icli/serve/static, no build step) and the JSON API.

GET /api/model, POST /api/sample, POST /api/interpolate (README: "t2i serve"). Every answer that is not a success is
JSON {"error": message}, the message starting with the request field at fault: 422 for a request that breaks the
schema or a bound (pydantic), 400 for one the model cannot answer (ServeError), 404/405/413 from the routing, and 500
"internal error" (the traceback goes to the server's log, never to the client). The server keeps serving.
"""

import os
from typing import Annotated, List, Literal, Optional

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr
from starlette.exceptions import HTTPException as StarletteHTTPException

from t2icli.errors import T2IError
from t2icli.serve.engine import LIMITS

__all__ = ["create_app", "SampleRequest", "InterpolateRequest", "STATIC", "MAX_BODY_BYTES"]

STATIC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
MAX_BODY_BYTES = 64 * 1024  # the largest valid request is ~3 KB (8 captions x 300 characters)

Caption = Annotated[StrictStr, Field(max_length=LIMITS["max_caption_chars"])]
Seed = Annotated[StrictInt, Field(ge=0, le=LIMITS["max_seed"])]


class SampleRequest(BaseModel):
    """POST /api/sample: {"captions": [...], "n": 4, "seed": 0, "stage": "all"|"last", "attention": null|bool}."""

    model_config = ConfigDict(extra="forbid")  # a misspelt field ("caption") is an error, not silently ignored
    captions: Annotated[List[Caption], Field(min_length=1, max_length=LIMITS["max_captions"])]
    n: Annotated[StrictInt, Field(ge=1, le=LIMITS["max_n"])] = 4
    seed: Seed = 0
    stage: Literal["all", "last"] = "all"
    attention: Optional[StrictBool] = None


class InterpolateRequest(BaseModel):
    """POST /api/interpolate: {"a": "...", "b": "...", "steps": 8, "seed": 0, "n": 1}."""

    model_config = ConfigDict(extra="forbid")
    a: Caption
    b: Caption
    steps: Annotated[StrictInt, Field(ge=LIMITS["min_steps"], le=LIMITS["max_steps"])] = 8
    seed: Seed = 0
    n: Annotated[StrictInt, Field(ge=1, le=LIMITS["max_interp_n"])] = 1


def _where(loc):
    """A pydantic error location ("body", "captions", 2) -> "captions[2]"."""
    parts = [p for p in loc if p != "body"]
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "body"


def _validation_message(exc):
    msgs = []
    for e in exc.errors():
        where = _where(e.get("loc", ()))
        if e.get("type") == "json_invalid":
            msgs.append(f"body: not valid JSON ({e.get('ctx', {}).get('error', e.get('msg'))})")
        elif e.get("type") == "extra_forbidden":
            msgs.append(f"{where}: unknown field (the fields are those of the README's API section)")
        else:
            msgs.append(f"{where}: {e.get('msg')}")
    return "; ".join(msgs) or "invalid request"


def create_app(engine):
    """The ASGI app serving `engine` (a t2icli.serve.engine.Engine): the page at /, its files at /static, the API."""
    app = FastAPI(title="t2i serve", docs_url=None, redoc_url=None, openapi_url=None)

    @app.middleware("http")
    async def limit_body(request: Request, call_next):
        """Refuse bodies larger than MAX_BODY_BYTES before they are read (a caption is at most 300 characters)."""
        size = request.headers.get("content-length")
        if size is not None and (not size.isdigit() or int(size) > MAX_BODY_BYTES):
            return JSONResponse({"error": f"body: larger than {MAX_BODY_BYTES} bytes"}, status_code=413)
        return await call_next(request)

    @app.exception_handler(RequestValidationError)
    async def on_invalid(request, exc):
        return JSONResponse({"error": _validation_message(exc)}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def on_http(request, exc):
        if exc.status_code == 404:
            message = f"not found: {request.url.path}"
        elif exc.status_code == 405:
            message = f"{request.method} {request.url.path}: method not allowed (the API's routes are in the README)"
        else:
            message = str(exc.detail)
        return JSONResponse({"error": message}, status_code=exc.status_code)

    @app.exception_handler(T2IError)
    async def on_user_error(request, exc):
        return JSONResponse({"error": str(exc)}, status_code=400)

    @app.exception_handler(Exception)
    async def on_crash(request, exc):
        # Starlette re-raises after answering, so the traceback reaches the server's log (uvicorn prints it).
        return JSONResponse({"error": f"internal error ({type(exc).__name__}); see the server's log"},
                            status_code=500)

    @app.get("/", include_in_schema=False)
    def index():
        return FileResponse(os.path.join(STATIC, "index.html"), media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/api/model")
    def get_model():
        """The model card (t2icli.serve.card.model_card) and the request bounds ("limits")."""
        return dict(engine.card, limits=LIMITS)

    # Plain `def` routes: FastAPI runs them in its thread pool, so a long generation never blocks the event loop
    # (the page and /api/model stay responsive while images are drawn).
    @app.post("/api/sample")
    def post_sample(req: SampleRequest):
        """Images of every stage (+ OOV words, attention maps, grid PNG) per caption: Engine.sample."""
        return engine.sample(req.captions, n=req.n, seed=req.seed, stage=req.stage, attention=req.attention)

    @app.post("/api/interpolate")
    def post_interpolate(req: InterpolateRequest):
        """Final-stage images between two captions' features: Engine.interpolate."""
        return engine.interpolate(req.a, req.b, steps=req.steps, seed=req.seed, n=req.n)

    return app
