"""Download challenge files from the contest server.

Example: python scripts/download_challenges.py --url http://localhost:8000 --user alice --count 15 -o challenges/
Each file is written atomically as OUT/challenge-<i>; a file already there is kept, and a failed
download never replaces a good file.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from simcaptcha.challenges import write_atomic
from simcaptcha.contest import ContestClient, ContestError


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True, help="base URL of the contest server")
    parser.add_argument("--user", required=True, help="contest user name")
    parser.add_argument("--count", type=int, default=15, help="how many challenge files (1,000 captchas each)")
    parser.add_argument("-o", "--out", type=Path, default=Path("challenges"), help="folder for challenge-<i> files")
    parser.add_argument("--retries", type=int, default=3, help="retries of a request that could not connect")
    parser.add_argument("--force", action="store_true", help="download again files that are already there")
    args = parser.parse_args(argv)

    client = ContestClient(args.url, args.user, retries=args.retries)
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
    print(f"{args.count - failed} of {args.count} challenge files in {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
