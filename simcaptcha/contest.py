"""HTTP client for the captcha contest API: download challenges, check and submit solutions.

The server is untrusted and the network unreliable:
- every request has a total deadline (`timeout`), so a server that trickles bytes or hangs
  cannot hold a download; a reply larger than `max_bytes` is refused;
- GETs are retried with exponential backoff on connection errors, timeouts and 5xx replies;
  a POST of solutions is sent once and never again: if its reply does not come, the outcome is
  reported as unknown (the server may have counted it);
- redirects are followed only inside the base URL (same scheme, host, port and path prefix),
  at most 5 in a row;
- a downloaded challenge is returned only if it parses and holds at least one good captcha.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import requests
import urllib3

from .spec import legacy_spec
from .challenges import LoadResult, parse_challenge

MAX_ANSWERS = 15_000
MAX_REDIRECTS = 5
REDIRECT_CODES = {301, 302, 303, 307, 308}


class ContestError(Exception):
    """The server could not be reached, or answered something other than what the API promises."""


class _Retryable(ContestError):
    """A failure a GET may try again: no connection, a timeout, a broken body, a 5xx reply."""


def check_solutions(body) -> list[str]:
    """Problems that would make the server reject or waste a submission; empty when the body is good."""
    if not isinstance(body, dict) or not isinstance(body.get("solutions"), list):
        return ['the body must be {"solutions": [{"name": ..., "solution": ...}, ...]}']
    problems, seen = [], set()
    entries = body["solutions"]
    if not entries:
        problems.append("no solutions to submit")
    if len(entries) > MAX_ANSWERS:
        problems.append(f"{len(entries)} entries: the server takes at most {MAX_ANSWERS} (use `simcaptcha solve --top {MAX_ANSWERS}`)")
    for i, e in enumerate(entries):
        if not isinstance(e, dict) or not isinstance(e.get("name"), str) or not isinstance(e.get("solution"), str):
            problems.append(f"entry {i}: needs string fields name and solution")
            continue
        if not legacy_spec().is_valid(e["solution"]):  # the contest's captchas: 4 characters of a-z0-9
            problems.append(f"entry {i} ({e['name'][:40]}): solution {e['solution'][:20]!r} is not 4 characters of a-z0-9")
        if e["name"] in seen:
            problems.append(f"entry {i}: name {e['name'][:40]} appears more than once")
        seen.add(e["name"])
    return problems


@dataclass
class Reply:
    status: int
    content: bytes
    location: str = ""  # where a redirect points

    @property
    def redirect(self) -> bool:
        return self.status in REDIRECT_CODES

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")


def _nothing_sent(exc: Exception) -> bool:
    """True when a request failed before any byte of it reached the server (it could not connect)."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return isinstance(exc, requests.ConnectionError) and isinstance(reason, urllib3.exceptions.NewConnectionError)


@dataclass
class ContestClient:
    base_url: str
    user: str
    retries: int = 3
    backoff: float = 1.0  # seconds before the first retry, doubled after each
    timeout: float = 60.0  # total seconds one request may take, connecting and reading the whole reply
    max_bytes: int = 64 * 2**20  # largest reply read (a challenge file is about 3 MB)

    def _url(self, path: str) -> str:
        return f"{self.base_url.rstrip('/')}/u/{self.user}/{path}"

    def _inside_base(self, url: str) -> bool:
        base, target = urlsplit(self.base_url.rstrip("/") + "/"), urlsplit(url)
        return (target.scheme, target.netloc) == (base.scheme, base.netloc) and (target.path + "/").startswith(base.path)

    def _once(self, method: str, url: str, body: bytes | None) -> Reply:
        """One request and its whole reply within the deadline; redirects returned, not followed."""
        deadline = time.monotonic() + self.timeout
        headers = {"Content-Type": "application/json"} if body is not None else {}
        response = requests.request(method, url, data=body, headers=headers, stream=True, allow_redirects=False,
                                    timeout=(min(10.0, self.timeout), self.timeout))
        try:
            chunks, size = [], 0
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise _Retryable(f"no whole reply within {self.timeout:g} s")
                sock = getattr(getattr(response.raw, "_connection", None), "sock", None)
                if sock is not None:
                    sock.settimeout(remaining)  # one slow read may not outlast the deadline either
                chunk = response.raw.read1(65536, decode_content=True)
                if not chunk:
                    break
                size += len(chunk)
                if size > self.max_bytes:
                    raise ContestError(f"the reply is larger than {self.max_bytes / 2**20:.0f} MB; not read")
                chunks.append(chunk)
            return Reply(response.status_code, b"".join(chunks), response.headers.get("Location", ""))
        finally:
            response.close()

    def _get(self, path: str) -> Reply:
        """A GET, retried with backoff on connection errors, timeouts, broken replies and 5xx."""
        delay = self.backoff
        for attempt in range(self.retries + 1):
            try:
                reply = self._follow(self._url(path))
                if reply.status >= 500:
                    raise _Retryable(f"HTTP {reply.status}")
                return reply
            except _Retryable as exc:
                problem = str(exc)
            except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
                problem = exc.__class__.__name__
            if attempt == self.retries:
                raise ContestError(f"cannot reach {self.base_url}: {problem} after {self.retries + 1} tries") from None
            time.sleep(delay)
            delay *= 2
        raise AssertionError("unreachable")

    def _follow(self, url: str) -> Reply:
        for _ in range(MAX_REDIRECTS + 1):
            reply = self._once("GET", url, None)
            if not reply.redirect:
                return reply
            target = urljoin(url, reply.location)
            if not self._inside_base(target):
                raise ContestError(f"the server redirected to {target[:120]}, outside {self.base_url}; not followed")
            url = target
        raise ContestError(f"more than {MAX_REDIRECTS} redirects in a row from {self.base_url}; stopped")

    def challenge(self) -> bytes:
        """One challenge file's bytes, checked to parse and to hold at least one good captcha."""
        reply = self._get("challenge")
        if reply.status != 200:
            raise ContestError(f"challenge: HTTP {reply.status}: {reply.text[:200]!r}")
        check = LoadResult()
        parse_challenge(reply.content, "reply", check)
        if not check.captchas:
            first = check.errors[0] if check.errors else "no captcha"
            raise ContestError(f"challenge: the reply holds no readable captcha ({first[:200]})")
        return reply.content

    def image(self, name: str | None = None) -> bytes:
        reply = self._get(f"image/{name}" if name else "random_image")
        if reply.status != 200:
            raise ContestError(f"image: HTTP {reply.status}")
        return reply.content

    def submit(self, body: dict) -> dict:
        """POST the solutions once; returns the server's JSON reply (with "passcode" on success).

        Never sent twice: if the server cannot be reached, nothing was sent; if the reply does not
        come, ContestError says the outcome is unknown (the server may have counted it).
        """
        url = self._url("solution")
        unknown = "solution: unknown outcome ({}): the server may have received the submission; it was not sent again"
        try:
            reply = self._once("POST", url, json.dumps(body).encode())
        except _Retryable as exc:
            raise ContestError(unknown.format(exc)) from None
        except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
            if _nothing_sent(exc):
                raise ContestError(f"cannot reach {self.base_url}: {exc.__class__.__name__}; nothing was sent") from None
            raise ContestError(unknown.format(exc.__class__.__name__)) from None
        if reply.redirect:
            raise ContestError(f"solution: the server redirected to {reply.location[:120]}; a submission is not sent again")
        try:
            answer = json.loads(reply.content)
        except (ValueError, RecursionError):
            raise ContestError(f"solution: HTTP {reply.status}, reply is not JSON: {reply.text[:200]!r}") from None
        if not isinstance(answer, dict):
            raise ContestError(f"solution: HTTP {reply.status}: unexpected reply {str(answer)[:200]}")
        if reply.status != 200:
            answer.setdefault("error", f"HTTP {reply.status}")
        return answer
