"""`python -m portal.dbcheck`: stop early, with a message saying what to start, when the database
server in DATABASE_URL cannot be reached; create the database when the server has none of that
name (used by `make test`)."""

import os
import sys

import environ


def main() -> int:
    url = os.environ.get("DATABASE_URL", "")
    config = environ.Env.db_url_config(url) if url else {}
    if "postgresql" not in config.get("ENGINE", ""):
        return 0
    import psycopg
    from psycopg import sql

    try:
        connection = psycopg.connect(
            host=config.get("HOST") or "127.0.0.1",
            port=config.get("PORT") or 5432,
            user=config.get("USER") or "postgres",
            password=config.get("PASSWORD") or None,
            dbname="postgres",
            connect_timeout=5,
            autocommit=True,
        )
    except psycopg.OperationalError as exc:
        print(
            f"PostgreSQL is not reachable at {config.get('HOST')}:{config.get('PORT')} ({exc}).\n"
            "The tests need it. Start it, e.g.:\n"
            "  pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start\n"
            "or point DATABASE_URL / TEST_DATABASE_URL at a running server.",
            file=sys.stderr,
        )
        return 1
    with connection:
        name = config.get("NAME")
        exists = connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name])
        if name and exists.fetchone() is None:
            connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
