"""`simcaptcha serve`: an HTTP service over a Solver, with micro-batching of concurrent requests.

- `POST /solve` with one image as the body (any image content type, or
  application/octet-stream), or JSON: `{"image": "<base64>"}` for one, `{"images": [...]}` for
  a batch. One image answers `{"text", "confidence", "chars"}`; a batch answers
  `{"answers": [...]}` in order, a bad image there being `{"error": "..."}` in its place.
- `GET /health`: the model, its backend and the captcha spec it reads.
- Bad input is a 4xx JSON `{"error": "..."}` (400 not an image, wrong size, empty, bad JSON or
  base64; 413 over the size limit; 415 another content type), and the server keeps serving.
- Requests arriving together are read in one batch: a collector waits up to `max_wait_ms` for
  up to `max_batch` images, then runs the model once in a worker thread.
"""

# No `from __future__ import annotations` here: FastAPI reads the handlers' annotations at run time.

import asyncio
import base64
import binascii
import json
from dataclasses import dataclass

import numpy as np

from .solver import Solver, answers_from_probs, to_rgb


@dataclass(frozen=True)
class ServiceConfig:
    max_batch: int = 256  # images read together at most
    max_wait_ms: float = 2.0  # how long the collector waits for more requests to join a batch
    max_request_bytes: int = 4 * 2**20  # a request body larger than this is refused (413)
    max_images: int = 1024  # images in one JSON batch request


class _Refused(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class MicroBatcher:
    """Collects images from concurrent requests and reads them in one model call."""

    def __init__(self, solver: Solver, cfg: ServiceConfig):
        self.solver, self.cfg = solver, cfg
        self.queue: asyncio.Queue | None = None
        self.task: asyncio.Task | None = None
        self.batches = 0  # model calls made, for /health and tests

    async def start(self) -> None:
        self.queue = asyncio.Queue()
        self.task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self.task:
            self.task.cancel()

    async def read(self, images: list[np.ndarray]) -> list:
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in images]
        for image, future in zip(images, futures):
            self.queue.put_nowait((image, future))
        return [await f for f in futures]

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            items = [await self.queue.get()]
            deadline = loop.time() + self.cfg.max_wait_ms / 1000
            while len(items) < self.cfg.max_batch:
                timeout = deadline - loop.time()
                if timeout <= 0:
                    break
                try:
                    items.append(await asyncio.wait_for(self.queue.get(), timeout))
                except asyncio.TimeoutError:
                    break
            rgb = np.stack([image for image, _ in items])
            try:
                probs = await loop.run_in_executor(None, self.solver.probabilities, rgb)
                answers = answers_from_probs(probs, self.solver.spec)
            except Exception as exc:  # the model failed: every waiting request learns it, the service goes on
                for _, future in items:
                    if not future.done():
                        future.set_exception(exc)
                continue
            self.batches += 1
            for (_, future), answer in zip(items, answers):
                if not future.done():
                    future.set_result(answer)


def _decode_b64(value, where: str, size: tuple[int, int]) -> np.ndarray:
    if not isinstance(value, str) or not value:
        raise _Refused(400, f"{where}: expected a non-empty base64 string")
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise _Refused(400, f"{where}: bad base64") from None
    return _image(data, where, size)


def _image(data: bytes, where: str, size: tuple[int, int]) -> np.ndarray:
    try:
        return to_rgb(data, size)
    except ValueError as exc:
        raise _Refused(400, f"{where}: {exc}") from None


def create_app(solver: Solver, cfg: ServiceConfig = ServiceConfig()):
    """The FastAPI application serving `solver`."""
    from contextlib import asynccontextmanager

    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse

    batcher = MicroBatcher(solver, cfg)

    @asynccontextmanager
    async def lifespan(app):
        await batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="simcaptcha", lifespan=lifespan)
    app.state.batcher = batcher

    async def body_of(request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > cfg.max_request_bytes:
            raise _Refused(413, f"request body of {int(declared)} bytes; the limit is {cfg.max_request_bytes}")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > cfg.max_request_bytes:
                raise _Refused(413, f"request body over the {cfg.max_request_bytes}-byte limit")
            chunks.append(chunk)
        return b"".join(chunks)

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": solver.source, "backend": solver.backend, "batches": batcher.batches,
                "spec": solver.spec.to_dict()}

    @app.post("/solve")
    async def solve(request: Request):
        try:
            kind = request.headers.get("content-type", "application/octet-stream").split(";")[0].strip().lower()
            body = await body_of(request)
            if not body:
                raise _Refused(400, "empty request body: send an image, or JSON {\"image\": base64}")
            if kind == "application/json":
                try:
                    doc = json.loads(body)
                except (ValueError, RecursionError):
                    raise _Refused(400, "body is not JSON") from None
                if isinstance(doc, dict) and "images" in doc:
                    return await solve_batch(doc["images"])
                if not isinstance(doc, dict) or "image" not in doc:
                    raise _Refused(400, 'expected JSON {"image": base64} or {"images": [base64, ...]}')
                image = _decode_b64(doc["image"], "image", solver.spec.size)
            elif kind.startswith("image/") or kind == "application/octet-stream":
                image = _image(body, "body", solver.spec.size)
            else:
                raise _Refused(415, f"content type {kind!r}: send an image, application/octet-stream or application/json")
            (answer,) = await batcher.read([image])
            return answer.to_dict()
        except _Refused as exc:
            return JSONResponse({"error": str(exc)}, status_code=exc.status)

    async def solve_batch(items):
        if not isinstance(items, list) or not items:
            raise _Refused(400, '"images" must be a non-empty list of base64 strings')
        if len(items) > cfg.max_images:
            raise _Refused(413, f"{len(items)} images; at most {cfg.max_images} in one request")
        results, good, where = [], [], []
        for i, value in enumerate(items):
            try:
                good.append(_decode_b64(value, f"images[{i}]", solver.spec.size))
                where.append(i)
                results.append(None)
            except _Refused as exc:
                results.append({"error": str(exc)})
        for i, answer in zip(where, await batcher.read(good) if good else []):
            results[i] = answer.to_dict()
        return {"answers": results}

    return app


def serve(solver: Solver, host: str = "127.0.0.1", port: int = 8000, cfg: ServiceConfig = ServiceConfig()) -> None:
    import uvicorn

    uvicorn.run(create_app(solver, cfg), host=host, port=port, log_level="warning")
