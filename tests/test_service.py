"""`simcaptcha serve`: a real uvicorn server on a loopback port, real HTTP requests."""

from __future__ import annotations

import base64
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")
import requests  # noqa: E402

import simcaptcha  # noqa: E402
from simcaptcha.service import ServiceConfig, create_app  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CAPTCHA = (ROOT / "examples" / "captcha.jpg").read_bytes()


class LoopbackServer:
    """uvicorn serving an app on 127.0.0.1 and a free port, in a thread, for the length of a test module."""

    def __init__(self, app):
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="error", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.05)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture(scope="module")
def solver():
    return simcaptcha.load()


@pytest.fixture(scope="module")
def server(solver):
    app = create_app(solver, ServiceConfig(max_batch=64, max_wait_ms=20, max_request_bytes=200_000, max_images=50))
    with LoopbackServer(app) as s:
        s.app = app
        yield s


def post(server, data=None, json_body=None, kind=None):
    headers = {"Content-Type": kind} if kind else {}
    return requests.post(f"{server.url}/solve", data=data, json=json_body, headers=headers, timeout=30)


def test_health(server):
    r = requests.get(f"{server.url}/health", timeout=10)
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok" and body["spec"] == {"height": 50, "width": 100, "length": "4", "min_length": 4, "max_length": 4,
                                                  "alphabet": "0123456789abcdefghijklmnopqrstuvwxyz", "ink": "light"}


def test_solve_raw_bytes_base64_and_batch_agree_with_the_api(server, solver):
    expected = solver.solve(CAPTCHA)
    raw = post(server, data=CAPTCHA, kind="image/jpeg")
    assert raw.status_code == 200, raw.text
    assert raw.json()["text"] == expected.text == "nsca"
    assert raw.json()["confidence"] == pytest.approx(expected.confidence, abs=1e-5)
    assert len(raw.json()["chars"]) == 4
    b64 = base64.b64encode(CAPTCHA).decode()
    one = post(server, json_body={"image": b64})
    assert one.status_code == 200 and one.json()["text"] == expected.text
    batch = post(server, json_body={"images": [b64, "%%%", b64]})
    assert batch.status_code == 200
    answers = batch.json()["answers"]
    assert answers[0]["text"] == answers[2]["text"] == expected.text
    assert "bad base64" in answers[1]["error"]


@pytest.mark.parametrize("data, kind, status, words", [
    (b"", "image/jpeg", 400, "empty"),
    (b"not an image at all", "image/png", 400, "not a readable image"),
    (b"x" * 300_000, "image/jpeg", 413, "limit"),
    (b"{nope", "application/json", 400, "not JSON"),
    (json.dumps({"picture": 1}).encode(), "application/json", 400, "expected JSON"),
    (json.dumps({"images": ["a"] * 51}).encode(), "application/json", 413, "at most 50"),
    (b"hello", "text/plain", 415, "content type"),
])
def test_bad_input_is_a_4xx_json_error_and_the_server_keeps_serving(server, data, kind, status, words):
    r = post(server, data=data, kind=kind)
    assert r.status_code == status and words in r.json()["error"], r.text
    assert post(server, data=CAPTCHA, kind="image/jpeg").status_code == 200


def test_wrong_size_image_is_refused(server):
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (160, 60)).save(buf, "PNG")
    r = post(server, data=buf.getvalue(), kind="image/png")
    assert r.status_code == 400 and "160x60" in r.json()["error"]


def test_concurrent_requests_are_read_in_shared_batches(server):
    before = server.app.state.batcher.batches
    with ThreadPoolExecutor(16) as pool:
        replies = list(pool.map(lambda _: post(server, data=CAPTCHA, kind="image/jpeg"), range(64)))
    assert all(r.status_code == 200 and r.json()["text"] == "nsca" for r in replies)
    assert server.app.state.batcher.batches - before < 64  # some requests shared a model call
