"""Download challenge files from the contest server.

Example: python scripts/download_challenges.py --url http://localhost:8000 --user alice --count 15 -o challenges/
Each file is written atomically as OUT/challenge-<i>, and only once the reply parses and holds
at least one good captcha: a failed or corrupt download never replaces a good file. A file
already there is kept unless --force. A failure is one line; the other files are still tried.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from simcaptcha.contest import ContestClient, ContestError
from simcaptcha.files import write_atomic


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def not_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True, help="base URL of the contest server")
    parser.add_argument("--user", required=True, help="contest user name")
    parser.add_argument("--count", type=positive, default=15, help="how many challenge files (1,000 captchas each)")
    parser.add_argument("-o", "--out", type=Path, default=Path("challenges"), help="folder for challenge-<i> files")
    parser.add_argument("--retries", type=not_negative, default=3, help="retries of a download that failed to connect, timed out or got a 5xx reply")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds one download may take in all, reply included")
    parser.add_argument("--force", action="store_true", help="download again files that are already there (replaced only by a good download)")
    args = parser.parse_args(argv)

    if args.out.exists() and not args.out.is_dir():
        print(f"error: {args.out}: is a file, not a folder", file=sys.stderr)
        return 1
    client = ContestClient(args.url, args.user, retries=args.retries, timeout=args.timeout)
    failed = 0
    for i in range(args.count):
        path = args.out / f"challenge-{i}"
        if path.exists() and not args.force:
            print(f"{path}: already there, kept")
            continue
        try:
            write_atomic(path, client.challenge())
            print(f"{path}: downloaded")
        except ContestError as exc:
            failed += 1
            print(f"{path}: {exc}", file=sys.stderr)
        except OSError as exc:
            failed += 1
            print(f"{path}: cannot write ({exc.strerror or exc.__class__.__name__})", file=sys.stderr)
    print(f"{args.count - failed} of {args.count} challenge files in {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
