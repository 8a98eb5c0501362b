"""`manage.py backup PATH`: the database of record to one file, in pg_dump's custom format
(compressed; restored with pg_restore, table by table if need be). See docs/operations.md for
the restore drill.

The file is written next to PATH under a temporary name and renamed when pg_dump succeeded, so
a failed backup never leaves a truncated file under the expected name. The password goes to
pg_dump through its environment (`PGPASSWORD`), never on its command line. SQLite (the demo)
is refused with a clear error: copy that file with `sqlite3 demo.sqlite3 ".backup PATH"`."""

from __future__ import annotations

import os
import shutil
import subprocess  # noqa: S404
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from django.db import connections


def pg_dump_command(settings_dict: dict, path: Path) -> tuple[list[str], dict[str, str]]:
    """(argv, extra environment) of pg_dump for a Django PostgreSQL database's settings."""
    argv = ["pg_dump", "--format=custom", f"--file={path}", "--no-password"]
    for option, key in (("--host", "HOST"), ("--port", "PORT"), ("--username", "USER")):
        if settings_dict.get(key):
            argv.append(f"{option}={settings_dict[key]}")
    argv.append(settings_dict["NAME"])
    env = {"PGPASSWORD": str(settings_dict["PASSWORD"])} if settings_dict.get("PASSWORD") else {}
    sslmode = settings_dict.get("OPTIONS", {}).get("sslmode")
    if sslmode:
        env["PGSSLMODE"] = sslmode
    return argv, env


class Command(BaseCommand):
    help = "Back the database up to PATH with pg_dump (custom format); PostgreSQL only."

    def add_arguments(self, parser):
        parser.add_argument("path", help="The backup file to write (e.g. portal-2025-01-31.dump).")
        parser.add_argument("--database", default="default", help="The database alias.")
        parser.add_argument("--force", action="store_true", help="Replace an existing file.")

    def handle(self, *args, path: str, database: str, force: bool, **options):
        connection = connections[database]
        if connection.vendor != "postgresql":
            raise CommandError(
                f"backup wraps pg_dump and needs PostgreSQL; the database '{database}' is "
                f"{connection.vendor} (the demo). Copy a SQLite file with "
                '`sqlite3 demo.sqlite3 ".backup PATH"` instead.'
            )
        target = Path(path)
        if target.exists() and not force:
            raise CommandError(f"{target} exists; give --force to replace it.")
        if not target.parent.is_dir():
            raise CommandError(f"No directory {target.parent}.")
        if shutil.which("pg_dump") is None:
            raise CommandError(
                "pg_dump is not installed (Debian: apt-get install postgresql-client)."
            )
        partial = target.with_name(target.name + ".partial")
        argv, extra = pg_dump_command(connection.settings_dict, partial)
        done = subprocess.run(  # noqa: S603 - argv built from settings, no shell
            argv, env={**os.environ, **extra}, capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            partial.unlink(missing_ok=True)
            raise CommandError(f"pg_dump failed ({done.returncode}): {done.stderr.strip()}")
        partial.replace(target)
        size = target.stat().st_size
        name = connection.settings_dict["NAME"]
        self.stdout.write(f"Backed up {name} to {target} ({size} bytes).")
