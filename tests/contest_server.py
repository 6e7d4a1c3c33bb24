"""A contest server on 127.0.0.1 that follows ../shared/CONTEST.md, for the client and script tests."""

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

            def do_GET(self):
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
                parts = self._parts()
                if not parts or parts[2] != "solution":
                    return self._send(404, b'{"error": "not found"}')
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
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
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
