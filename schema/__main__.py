"""``python -m changewatch.schema migrate [--create-database] [--worker-login U]
[--producer-login U]``, and ``python -m changewatch.schema json-schemas``.

Brings the database up to date, then creates the services' login roles in the
least-privilege groups. Their passwords come from the environment
(``CHANGEWATCH_WORKER_DB_PASSWORD``, ``CHANGEWATCH_PRODUCER_DB_PASSWORD``), never from
the command line, where ``ps`` would show them.
"""

from __future__ import annotations

import argparse
import os
import sys

import psycopg

from ..settings import Settings
from .migrate import ensure_database, ensure_login, migrate

# service -> the variable holding its login role's password
LOGINS = {
    "worker": "CHANGEWATCH_WORKER_DB_PASSWORD",
    "producer": "CHANGEWATCH_PRODUCER_DB_PASSWORD",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m changewatch.schema")
    sub = parser.add_subparsers(dest="command", required=True)
    cmd = sub.add_parser("migrate", help="apply pending migrations (safe to run twice)")
    cmd.add_argument(
        "--create-database", action="store_true", help="create the database first if missing"
    )
    for service in LOGINS:
        cmd.add_argument(
            f"--{service}-login",
            metavar="USER",
            help=f"create login role USER in changewatch_{service}, password from "
            f"${LOGINS[service]}",
        )
    sub.add_parser("json-schemas", help="write the contract's JSON Schema files to schema/json/")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "json-schemas":
        from .json_schemas import write

        for path in write():
            print(path, file=sys.stderr)
        return 0
    logins: list[tuple[str, str, str]] = []
    for service, variable in LOGINS.items():
        user = getattr(args, f"{service}_login")
        if user is None:
            continue
        password = os.environ.get(variable, "")
        if not password:
            print(f"migrate: --{service}-login needs a password in ${variable}", file=sys.stderr)
            return 2
        logins.append((user, password, f"changewatch_{service}"))
    url = Settings.from_env().database_url
    try:
        if args.create_database and ensure_database(url):
            print("created database", file=sys.stderr)
        applied = migrate(url)
        for user, password, group in logins:
            made = ensure_login(url, user, password, group)
            print(f"{'created' if made else 'updated'} login {user} in {group}", file=sys.stderr)
    except psycopg.Error as exc:
        # psycopg's messages name host and database, never the password.
        print(f"migrate failed: {exc}".strip(), file=sys.stderr)
        return 1
    print(f"applied: {', '.join(applied)}" if applied else "up to date", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
