"""The scoring service: a Starlette app that scores raw rows with a verified export.

Explained in the appendix "Serving the ranker" (``book/appendix_serving.ipynb``); started by
``python -m mmoe_annotated.serve --model PATH`` (:mod:`mmoe_annotated.serve.__main__`).

==================  ===========================================================================
route               what
==================  ===========================================================================
``POST /score``     ``{"rows": [{...}, ...]}`` -> ``{"tasks": [...], "scores": [{task: p}, ...]}``
``GET /health``     ``{"status": "ok"}`` once the export is loaded
``GET /metadata``   model kind, tasks, package version, the export's checksum, runtime, inputs
==================  ===========================================================================

The probabilities are calibrated when the export carries chapter 11's calibrator, and each row's
dictionary also holds ``"score"``, the fused ranking score, when it carries fusion weights
(``"calibrated"`` and ``"fused"`` in the answer, and ``GET /metadata``, say which).

Bad input gets a 4xx and a JSON ``{"error": ..., "row": ..., "field": ...}``, never a 500: a body
over the size limit is refused (413) before it is read whole, let alone parsed; a body that is
not JSON is a 400; too many rows a 413; a missing column, a value of the wrong type or one the
encoder refuses (a dense value beyond float32 once scaled) a 422 naming the row and the field
(:mod:`mmoe_annotated.serve.rows`). Scoring runs on a worker thread (``scoring_threads`` at a
time), so the event loop keeps accepting requests while a batch is scored.
"""
from __future__ import annotations

import anyio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ..data.schema import DataError
from .load import Exported
from .rows import RequestError, parse_body, rows_frame

__all__ = ["MAX_ROWS", "MAX_BODY_BYTES", "make_app"]

#: Default limits: rows per request, and bytes of a request's body.
MAX_ROWS = 4096
MAX_BODY_BYTES = 4 << 20


async def _body(request: Request, limit: int) -> bytes:
    """The body, refused (413) as soon as it is known to exceed ``limit``: from Content-Length
    before reading anything, and while streaming when the header is absent or lies."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.strip().isdigit():
            raise RequestError(400, f"the Content-Length header is not a number: {declared[:40]!r}")
        if int(declared) > limit:
            raise RequestError(413, f"the body is {int(declared)} bytes, more than the limit of {limit}; "
                                    "send fewer rows per request")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestError(413, f"the body is more than the limit of {limit} bytes; send fewer rows "
                                    "per request")
        chunks.append(chunk)
    return b"".join(chunks)


def _scores(model: Exported, document: object, max_rows: int) -> dict:
    """Score a parsed body (on a worker thread): rows checked, encoded, run."""
    frame = rows_frame(document, model.encoder, max_rows)
    head = {"tasks": list(model.tasks), "calibrated": model.calibrator is not None,
            "fused": model.fusion is not None}
    if len(frame) == 0:
        return dict(head, scores=[])
    try:
        x = model.encoder.transform(frame)
    except DataError as exc:  # e.g. a dense value beyond float32 once scaled: names the column and row
        raise RequestError(422, str(exc)) from None
    probabilities, _ = model.score(x)  # (B, T), calibrated when the export carries a calibrator
    rows = [dict(zip(model.tasks, map(float, row))) for row in probabilities]
    fused = model.fused(probabilities)  # (B,) or None
    if fused is not None:
        for row, s in zip(rows, fused):
            row["score"] = float(s)
    return dict(head, scores=rows)


def make_app(model: Exported, *, max_rows: int = MAX_ROWS, max_body_bytes: int = MAX_BODY_BYTES,
             scoring_threads: int = 1) -> Starlette:
    """The service for one loaded export (:func:`~mmoe_annotated.serve.load_export`)."""
    limiter = anyio.CapacityLimiter(max(1, int(scoring_threads)))
    metadata = dict(model.metadata(), max_rows=max_rows, max_body_bytes=max_body_bytes)

    async def score(request: Request) -> JSONResponse:
        try:
            document = parse_body(await _body(request, max_body_bytes))
            result = await anyio.to_thread.run_sync(_scores, model, document, max_rows, limiter=limiter)
        except RequestError as exc:
            return JSONResponse(exc.body(), status_code=exc.status)
        except ClientDisconnect:
            return JSONResponse({"error": "the client went away"}, status_code=400)
        return JSONResponse(result)

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def meta(request: Request) -> JSONResponse:
        return JSONResponse(metadata)

    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"error": exc.detail, "row": None, "field": None}, status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    async def server_error(request: Request, exc: Exception) -> JSONResponse:
        # Only a fault of the service itself lands here (bad input is answered above): say so, no trace.
        return JSONResponse({"error": f"internal error ({type(exc).__name__}); the request was not scored",
                             "row": None, "field": None}, status_code=500)

    routes = [Route("/score", score, methods=["POST"]), Route("/health", health, methods=["GET"]),
              Route("/metadata", meta, methods=["GET"])]
    return Starlette(routes=routes, exception_handlers={HTTPException: http_error, Exception: server_error})
