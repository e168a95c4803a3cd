"""The ASGI application of ``gdmix serve`` (Starlette, run by uvicorn).

Endpoints:

``POST /score``
    Body ``{"rows": [{...}, ...], "context": {...}}`` (see :mod:`gdmix.serving.schema`);
    answers ``{"version", "scores": {coordinate: [...]}, "offset", "total",
    "probability", "uid"}``, one value per row, scored in one vectorised pass by the
    version serving when the request arrived. Bad input is a 4xx naming the field.
``GET /healthz``
    200 with the version serving.
``GET /model``
    The version serving: number, path, lineage, metrics, coordinates, inputs.
``GET /metrics``
    Prometheus text: requests by endpoint and status, the ``/score`` latency histogram,
    rows scored, model version, swaps, failed loads, load time.
``POST /reload``
    Load the version the source points at now (also one refused before); 200 with what
    happened, 409 when the version was refused (the old one keeps serving).

Scoring runs on the event loop itself: a request is a few hundred microseconds of
compiled lookups and dot products, less than a hop to a thread pool would cost.
Loading a new version runs in the watcher thread (or, for ``POST /reload``, a worker
thread), never on the event loop.
"""

from __future__ import annotations

import gc
import logging
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request as HTTPRequest
from starlette.responses import Response
from starlette.routing import Route

from gdmix.serving.metrics import Metrics
from gdmix.serving.schema import Request, RequestError, dumps
from gdmix.serving.swap import ModelService

__all__ = ["DEFAULT_MAX_BODY_BYTES", "DEFAULT_MAX_ROWS", "create_app", "run_server"]

logger = logging.getLogger("gdmix")

#: Most rows one ``POST /score`` may carry.
DEFAULT_MAX_ROWS = 10_000
#: Largest ``POST /score`` body, in bytes.
DEFAULT_MAX_BODY_BYTES = 16 * 2**20
#: Thread switch interval of a serving process, in seconds.
SWITCH_INTERVAL = 0.0005


def _json(payload: Any, status: int = 200) -> Response:
    return Response(dumps(payload), status_code=status, media_type="application/json")


_JSON_HEADER = (b"content-type", b"application/json")


class _ScoreEndpoint:
    """``POST /score`` as a bare ASGI application: the hot path, without the request and
    response objects of the framework (a quarter of the time of a small request)."""

    def __init__(
        self, service: ModelService, metrics: Metrics, max_rows: int, max_body_bytes: int
    ) -> None:
        self.service = service
        self.metrics = metrics
        self.max_rows = max_rows
        self.max_body_bytes = max_body_bytes

    async def _body(self, scope: Any, receive: Any) -> bytes | None:
        limit = self.max_body_bytes
        for name, value in scope.get("headers", ()):
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                raise RequestError("body", f"is {int(value)} bytes; at most {limit}", 413)
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise RequestError("body", f"is over {limit} bytes", 413)
            chunks.append(chunk)
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        start = time.perf_counter()
        model = self.service.model  # this request's version, whatever swaps meanwhile
        rows = 0
        try:
            body = await self._body(scope, receive)
            if body is None:  # the client went away
                return
            request = Request.parse(body, max_rows=self.max_rows)
            payload = {"version": model.version, **model.score(request).to_dict()}
            status, rows = 200, request.n
        except RequestError as err:
            payload, status = err.to_dict(), err.status
        except Exception as err:  # a bug, never bad input: say so, keep serving
            logger.exception("POST /score failed")
            payload, status = {"error": f"internal error: {err!r}", "field": None}, 500
        data = dumps(payload)
        await send({"type": "http.response.start", "status": status,
                    "headers": [_JSON_HEADER, (b"content-length", b"%d" % len(data))]})  # fmt: skip
        await send({"type": "http.response.body", "body": data})
        self.metrics.observe("/score", status, time.perf_counter() - start, rows)


def create_app(
    service: ModelService,
    *,
    max_rows: int = DEFAULT_MAX_ROWS,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    metrics: Metrics | None = None,
) -> Starlette:
    """The service's ASGI application.

    Parameters
    ----------
    service : ModelService
        The model source. Started (first load, watcher) at application start-up when
        it is not yet, and stopped at shutdown.
    max_rows : int
        Most rows per ``POST /score`` (413 beyond).
    max_body_bytes : int
        Largest ``POST /score`` body (413 beyond).
    metrics : Metrics, optional
        Where the counters go (a new one by default); also ``app.state.metrics``.

    Returns
    -------
    starlette.applications.Starlette
    """
    metrics = metrics or Metrics()

    async def healthz(http: HTTPRequest) -> Response:
        status = service.status()
        metrics.observe("/healthz", 200)
        return _json({"status": "ok", "version": status["version"], "swaps": status["swaps"],
                      "load_failures": status["load_failures"]})  # fmt: skip

    async def model_info(http: HTTPRequest) -> Response:
        info = service.model.describe()
        info["source"] = str(service.source)
        info["swaps"], info["load_failures"] = service.swaps, service.load_failures
        info["last_error"] = service.last_error
        metrics.observe("/model", 200)
        return _json(info)

    async def metrics_text(http: HTTPRequest) -> Response:
        metrics.observe("/metrics", 200)
        text = metrics.render(service.status())
        return Response(text, media_type="text/plain; version=0.0.4; charset=utf-8")

    async def reload(http: HTTPRequest) -> Response:
        outcome = await run_in_threadpool(service.reload, retry_failed=True)
        status = 409 if outcome.status == "refused" else 200
        metrics.observe("/reload", status)
        return _json(outcome.to_dict(), status)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await run_in_threadpool(service.start)  # the first load, unless done already
        try:
            yield
        finally:
            service.stop()

    app = Starlette(
        routes=[
            Route(
                "/score",
                _ScoreEndpoint(service, metrics, max_rows, max_body_bytes),
                methods=["POST"],
            ),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/model", model_info, methods=["GET"]),
            Route("/metrics", metrics_text, methods=["GET"]),
            Route("/reload", reload, methods=["POST"]),
        ],
        lifespan=lifespan,
    )
    app.state.service = service
    app.state.metrics = metrics
    return app


def run_server(
    service: ModelService,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    max_rows: int = DEFAULT_MAX_ROWS,
    log_level: str = "info",
) -> None:
    """Serve ``service`` over HTTP with uvicorn until interrupted.

    One process, one event loop (uvloop and httptools when installed); access logs
    off. The service is started (first load, watcher) before the socket opens. The
    interpreter's thread switch interval is cut to 0.5 ms, so that a version loading in
    the watcher thread hands the GIL back to the event loop within half a millisecond
    (the default, 5 ms, would show in the latency of every request that meets a load),
    and the objects of the start-up (modules, the first version) are frozen out of the
    garbage collector's full passes.
    """
    import uvicorn

    sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL))
    service.start()
    # Everything imported and loaded so far lives as long as the process: keep it out of
    # the garbage collector's full passes, which would otherwise walk it (hundreds of
    # thousands of objects, tens of milliseconds) in the middle of a request.
    gc.collect()
    gc.freeze()
    app = create_app(service, max_rows=max_rows)
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=False,
                            lifespan="on")  # fmt: skip
    uvicorn.Server(config).run()
