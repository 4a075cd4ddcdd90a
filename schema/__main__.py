"""``python -m schema migrate [--create-database]``: bring the database up to date."""

from __future__ import annotations

import argparse
import sys

import psycopg

from schema.migrate import ensure_database, migrate
from worker.settings import database_url


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m schema")
    sub = parser.add_subparsers(dest="command", required=True)
    cmd = sub.add_parser("migrate", help="apply pending migrations (safe to run twice)")
    cmd.add_argument(
        "--create-database", action="store_true", help="create the database first if missing"
    )
    args = parser.parse_args(argv)
    url = database_url()
    try:
        if args.create_database and ensure_database(url):
            print("created database", file=sys.stderr)
        applied = migrate(url)
    except psycopg.Error as exc:
        # psycopg's messages name host and database, never the password.
        print(f"migrate failed: {exc}".strip(), file=sys.stderr)
        return 1
    print(f"applied: {', '.join(applied)}" if applied else "up to date", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
