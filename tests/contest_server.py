"""A contest server on 127.0.0.1 that follows ../shared/CONTEST.md, for the client and script tests.

It can also misbehave on purpose (`fault`), for the hostile-input tests:
- "5xx": the next `fault_count` GETs answer 503;
- "close": a GET reply declares its length, sends half the body and closes the connection;
- "trickle": a GET reply sends one byte every 0.2 s;
- "hang": a GET sends nothing until the test ends;
- "redirect-loop": every GET redirects to itself;
- "redirect-off": every GET redirects to `redirect_to` (another host);
- "empty" / "corrupt": a GET challenge answers 200 with an empty or non-JSON body;
- "slow-post": a POST is read whole, then answered only after `slow_post_seconds`.
Every request is bounded: sleeps end when the server shuts down.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class ContestServer:
    """Serves challenges from a list of documents and judges solutions against `answers` (name -> text)."""

    def __init__(self, challenges: list[bytes], answers: dict[str, str], images: dict[str, bytes], threshold: int = 10_000):
        self.challenges, self.answers, self.images, self.threshold = challenges, answers, images, threshold
        self.fail_next = 0  # drop this many connections first, to test retries
        self.served = 0
        self.fault: str | None = None
        self.fault_count = 10**9  # how many GETs the fault applies to
        self.redirect_to = "http://127.0.0.1:9/elsewhere"
        self.slow_post_seconds = 5.0
        self.gets = 0
        self.posts = 0
        self.stopping = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, status: int, body: bytes, kind: str = "application/json"):
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _parts(self):
                parts = self.path.strip("/").split("/")
                return parts if len(parts) >= 3 and parts[0] == "u" else None

            def _fault(self) -> bool:
                """Misbehave as server.fault says; True when the request was handled that way."""
                if not server.fault or server.fault_count <= 0:
                    return False
                server.fault_count -= 1
                fault, doc = server.fault, server.challenges[0]
                if fault == "5xx":
                    self._send(503, b'{"error": "busy"}')
                elif fault == "close":
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(doc)))
                    self.end_headers()
                    self.wfile.write(doc[: len(doc) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                elif fault == "trickle":
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(doc)))
                    self.end_headers()
                    for i in range(len(doc)):
                        if server.stopping.wait(0.2):
                            break
                        try:
                            self.wfile.write(doc[i : i + 1])
                            self.wfile.flush()
                        except OSError:
                            break
                elif fault == "hang":
                    server.stopping.wait(30)
                elif fault == "redirect-loop":
                    self.send_response(302)
                    self.send_header("Location", self.path)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                elif fault == "redirect-off":
                    self.send_response(302)
                    self.send_header("Location", server.redirect_to)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                elif fault == "empty":
                    self._send(200, b"")
                elif fault == "corrupt":
                    self._send(200, b'{"images": [{"name": "x", "jpg_base64": "bm90IGFuIGltYWdl"}]}')
                else:
                    return False
                return True

            def do_GET(self):
                server.gets += 1
                if self._fault():
                    return
                if server.fail_next:
                    server.fail_next -= 1
                    self.connection.close()  # the client sees a dropped connection
                    return
                parts = self._parts()
                if parts and parts[2] == "challenge":
                    doc = server.challenges[server.served % len(server.challenges)]
                    server.served += 1
                    return self._send(200, doc)
                if parts and parts[2] == "random_image":
                    return self._send(200, next(iter(server.images.values())), "image/jpeg")
                if parts and parts[2] == "image" and len(parts) == 4 and parts[3] in server.images:
                    return self._send(200, server.images[parts[3]], "image/jpeg")
                self._send(404, b'{"error": "not found"}')

            def do_POST(self):
                server.posts += 1
                parts = self._parts()
                if not parts or parts[2] != "solution":
                    return self._send(404, b'{"error": "not found"}')
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if server.fault == "slow-post":
                    server.stopping.wait(server.slow_post_seconds)
                try:
                    body = json.loads(raw)
                    entries = body["solutions"]
                    pairs = [(e["name"], e["solution"]) for e in entries]
                except (ValueError, KeyError, TypeError):
                    return self._send(400, b"Bad Request", "text/plain")
                if len(pairs) > 15_000:
                    return self._send(200, json.dumps({"error": "Too many answers submitted"}).encode())
                correct, counted = 0, set()
                for name, text in pairs:
                    if name in counted:
                        continue  # a name counts once
                    if server.answers.get(name) == text:
                        correct += 1
                        counted.add(name)
                if correct >= server.threshold:
                    reply = {"message": "Well done!", "passcode": "open-sesame-42"}
                else:
                    reply = {"error": "Too few correct solutions", "message": "Insufficient number of correct solutions"}
                self._send(200, json.dumps(reply).encode())

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stopping.set()
        self.httpd.shutdown()
        self.httpd.server_close()
