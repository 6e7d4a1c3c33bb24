"""Load test of `simcaptcha serve`: N concurrent clients, bounded, loopback only; prints throughput and latency.

    python scripts/load_test.py --spawn --clients 1 4 16 --requests 2000
    python scripts/load_test.py --url http://127.0.0.1:8000 --clients 8

--spawn starts `simcaptcha serve` on a free loopback port (with --model, default the shipped
model) and stops it at the end. Every client sends one captcha per request (the JPEGs of
examples/hackmit, in turn) until the run's --requests are sent or --max-seconds pass. Only
loopback addresses are accepted: a load test never leaves this machine.
"""

from __future__ import annotations

import argparse
import ipaddress
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import requests

ROOT = Path(__file__).resolve().parents[1]


def loopback_only(url: str) -> str:
    host = urlsplit(url).hostname or ""
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except socket.gaierror:
        raise SystemExit(f"error: cannot resolve {host!r}")
    if not addresses or not all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses):
        raise SystemExit(f"error: {url} is not a loopback address; a load test only targets this machine")
    return url.rstrip("/")


def sample_jpegs() -> list[bytes]:
    from simcaptcha.challenges import load_captchas

    return [c.jpeg for c in load_captchas([ROOT / "examples" / "hackmit"]).captchas]


def run_clients(url: str, clients: int, total: int, max_seconds: float, bodies: list[bytes]) -> dict:
    latencies, errors, lock = [], [0], threading.Lock()
    counter = iter(range(total))
    stop_at = time.monotonic() + max_seconds

    def client():
        session = requests.Session()
        while time.monotonic() < stop_at:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            start = time.perf_counter()
            try:
                r = session.post(f"{url}/solve", data=bodies[i % len(bodies)], headers={"Content-Type": "image/jpeg"}, timeout=30)
                ok = r.status_code == 200
            except requests.RequestException:
                ok = False
            with lock:
                latencies.append(time.perf_counter() - start)
                errors[0] += not ok

    threads = [threading.Thread(target=client) for _ in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    ms = np.array(latencies) * 1000
    return {"clients": clients, "requests": len(ms), "errors": errors[0], "per_s": len(ms) / elapsed,
            "p50_ms": float(np.percentile(ms, 50)) if len(ms) else float("nan"),
            "p99_ms": float(np.percentile(ms, 99)) if len(ms) else float("nan")}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="base URL of a running service (loopback only)")
    parser.add_argument("--spawn", action="store_true", help="start `simcaptcha serve` on a free loopback port for the test")
    parser.add_argument("--model", help="with --spawn: the model to serve (default: the shipped one)")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16], help="concurrent clients, one run each")
    parser.add_argument("--requests", type=int, default=2000, help="requests per run")
    parser.add_argument("--max-seconds", type=float, default=60.0, help="a run stops after this long even if requests are left")
    args = parser.parse_args(argv)
    if bool(args.url) == args.spawn:
        parser.error("give --url or --spawn")
    if args.requests < 1 or min(args.clients) < 1:
        parser.error("--requests and --clients must be at least 1")

    process = None
    if args.spawn:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        command = [sys.executable, "-m", "simcaptcha", "serve", "--port", str(port)] + (["--model", args.model] if args.model else [])
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        while True:
            try:
                if requests.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"error: the service did not start: {process.stderr.read()[-500:] if process.stderr else ''}")
            time.sleep(0.2)
    else:
        url = loopback_only(args.url)
    try:
        health = requests.get(f"{url}/health", timeout=10).json()
        print(f"model {health.get('model')} ({health.get('backend')}), {args.requests} requests per run, one captcha each")
        bodies = sample_jpegs()
        run_clients(url, 2, 50, 30, bodies)  # warm-up: first calls trace the model
        print(f"{'clients':>8} {'requests':>9} {'errors':>7} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8}")
        for n in args.clients:
            r = run_clients(url, n, args.requests, args.max_seconds, bodies)
            print(f"{r['clients']:>8} {r['requests']:>9} {r['errors']:>7} {r['per_s']:>8.0f} {r['p50_ms']:>8.1f} {r['p99_ms']:>8.1f}")
    finally:
        if process is not None:
            process.terminate()
            process.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
