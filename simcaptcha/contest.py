"""HTTP client for the captcha contest API: download challenges, check and submit solutions."""

from __future__ import annotations

import time
from dataclasses import dataclass

import requests

from .alphabet import is_valid_text

MAX_ANSWERS = 15_000


class ContestError(Exception):
    """The server could not be reached, or answered something other than what the API promises."""


def check_solutions(body) -> list[str]:
    """Problems that would make the server reject or waste a submission; empty when the body is good."""
    if not isinstance(body, dict) or not isinstance(body.get("solutions"), list):
        return ['the body must be {"solutions": [{"name": ..., "solution": ...}, ...]}']
    problems, seen = [], set()
    entries = body["solutions"]
    if len(entries) > MAX_ANSWERS:
        problems.append(f"{len(entries)} entries: the server takes at most {MAX_ANSWERS} (use `simcaptcha solve --top {MAX_ANSWERS}`)")
    for i, e in enumerate(entries):
        if not isinstance(e, dict) or not isinstance(e.get("name"), str) or not isinstance(e.get("solution"), str):
            problems.append(f"entry {i}: needs string fields name and solution")
            continue
        if not is_valid_text(e["solution"]):
            problems.append(f"entry {i} ({e['name']}): solution {e['solution']!r} is not 4 characters of a-z0-9")
        if e["name"] in seen:
            problems.append(f"entry {i}: name {e['name']} appears more than once")
        seen.add(e["name"])
    return problems


@dataclass
class ContestClient:
    base_url: str
    user: str
    retries: int = 3
    backoff: float = 1.0  # seconds, doubled after each failed try
    timeout: float = 60.0

    def _url(self, path: str) -> str:
        return f"{self.base_url.rstrip('/')}/u/{self.user}/{path}"

    def _request(self, method: str, path: str, **kwargs) -> requests.Response:
        """One request, retried on connection errors and timeouts only; other failures are not retried."""
        delay = self.backoff
        for attempt in range(self.retries + 1):
            try:
                return requests.request(method, self._url(path), timeout=self.timeout, **kwargs)
            except (requests.ConnectionError, requests.Timeout) as exc:
                if attempt == self.retries:
                    raise ContestError(f"cannot reach {self.base_url}: {exc.__class__.__name__} after {self.retries + 1} tries") from None
                time.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")

    def challenge(self) -> bytes:
        """One challenge file's bytes, checked to be a challenge document."""
        import json

        response = self._request("GET", "challenge")
        if response.status_code != 200:
            raise ContestError(f"challenge: HTTP {response.status_code}: {response.text[:200]}")
        try:
            doc = json.loads(response.content)
        except ValueError:
            raise ContestError("challenge: the server's reply is not JSON") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("images"), list):
            raise ContestError('challenge: the reply has no "images" list')
        return response.content

    def image(self, name: str | None = None) -> bytes:
        response = self._request("GET", f"image/{name}" if name else "random_image")
        if response.status_code != 200:
            raise ContestError(f"image: HTTP {response.status_code}")
        return response.content

    def submit(self, body: dict) -> dict:
        """POST the solutions; returns the server's JSON reply (with "passcode" on success)."""
        response = self._request("POST", "solution", json=body)
        try:
            reply = response.json()
        except ValueError:
            raise ContestError(f"solution: HTTP {response.status_code}, reply is not JSON: {response.text[:200]!r}") from None
        if response.status_code != 200 and not isinstance(reply, dict):
            raise ContestError(f"solution: HTTP {response.status_code}: {reply}")
        if not isinstance(reply, dict):
            raise ContestError(f"solution: unexpected reply {reply!r}")
        if response.status_code != 200:
            reply.setdefault("error", f"HTTP {response.status_code}")
        return reply
