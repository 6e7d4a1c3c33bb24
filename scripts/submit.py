"""Submit a solutions file to the contest server and print its answer.

Example: python scripts/submit.py solutions.json --url http://localhost:8000 --user alice
The body is checked first (at most 15,000 entries, 4-character a-z0-9 solutions, unique names).
It is sent once: if no answer comes, the outcome is reported as unknown and nothing is re-sent.
Exit status 0 when the server gives a passcode, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from simcaptcha.contest import ContestClient, ContestError, check_solutions
from simcaptcha.files import InputError, read_json


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("solutions", type=Path, help="solutions.json from `simcaptcha solve`")
    parser.add_argument("--url", required=True, help="base URL of the contest server")
    parser.add_argument("--user", required=True, help="contest user name")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the server's answer; the submission is never sent twice")
    args = parser.parse_args(argv)

    try:
        body = read_json(args.solutions, what="solutions file")
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    problems = check_solutions(body)
    if problems:
        for p in problems[:20]:
            print(f"error: {args.solutions}: {p}", file=sys.stderr)
        if len(problems) > 20:
            print(f"error: ... and {len(problems) - 20} more problems", file=sys.stderr)
        return 1
    try:
        reply = ContestClient(args.url, args.user, timeout=args.timeout).submit(body)
    except ContestError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if "passcode" in reply:
        print(reply.get("message", "accepted"))
        print(f"passcode: {reply['passcode']}")
        return 0
    words = "; ".join(str(reply[k]) for k in ("error", "message") if k in reply) or json.dumps(reply)
    print(f"rejected: {words}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
