"""Settings come from the environment; production settings pass Django's deploy checks."""

import os
import secrets
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def manage(*args: str, **env: str) -> subprocess.CompletedProcess:
    base = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp")}
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_check_deploy_is_clean_with_production_settings():
    result = manage(
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
        SECRET_KEY=secrets.token_urlsafe(60),
        FIELD_ENCRYPTION_KEY="a2V5LWZvci10ZXN0cy1vbmx5LW5vdC1wcm9kdWN0aSE=",
        ALLOWED_HOSTS="portal.example.com",
        SECURE_SSL_REDIRECT="1",
        DATABASE_URL=os.environ["DATABASE_URL"],
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_secret_key_is_required_when_debug_is_off():
    result = manage("check", DATABASE_URL="sqlite:////tmp/unused.sqlite3")
    assert result.returncode != 0
    assert "SECRET_KEY is required" in result.stderr


def test_without_a_database_url_the_demo_uses_sqlite_with_wal_and_immediate_transactions():
    code = (
        "from django.conf import settings as s; d = s.DATABASES['default'];"
        "print(d['ENGINE'], d['OPTIONS']['transaction_mode'], d['OPTIONS']['init_command'],"
        " s.CELERY_TASK_ALWAYS_EAGER)"
    )
    result = manage("shell", "--no-imports", "-c", code, DEBUG="1")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [
        "django.db.backends.sqlite3",
        "IMMEDIATE",
        "PRAGMA",
        "journal_mode=WAL;",
        "True",
    ]


def test_prepared_statements_are_on_for_postgresql_unless_turned_off():
    code = "from django.conf import settings as s; print(s.DATABASES['default']['OPTIONS'])"
    url = os.environ["DATABASE_URL"]
    on = manage("shell", "--no-imports", "-c", code, DEBUG="1", DATABASE_URL=url)
    off = manage("shell", "--no-imports", "-c", code, DEBUG="1", DATABASE_URL=url,
                 DATABASE_PREPARED_STATEMENTS="0")  # fmt: skip
    demo = manage("shell", "--no-imports", "-c", code, DEBUG="1")
    assert on.returncode == off.returncode == demo.returncode == 0, on.stderr + off.stderr
    assert "'prepare_threshold': 5" in on.stdout
    assert "'prepare_threshold': None" in off.stdout
    assert "prepare_threshold" not in demo.stdout  # SQLite


def test_the_password_reset_limits_come_from_the_environment():
    code = (
        "from django.conf import settings as s; r = s.REST_FRAMEWORK['DEFAULT_THROTTLE_RATES'];"
        "print(r['password_reset_email'], r['password_reset_ip'])"
    )
    default = manage("shell", "--no-imports", "-c", code, DEBUG="1")
    limits = {"THROTTLE_PASSWORD_RESET_EMAIL": "5/day", "THROTTLE_PASSWORD_RESET_IP": "50/hour"}
    chosen = manage("shell", "--no-imports", "-c", code, DEBUG="1", **limits)
    assert default.returncode == chosen.returncode == 0, default.stderr + chosen.stderr
    assert default.stdout.split() == ["3/hour", "20/hour"]
    assert chosen.stdout.split() == ["5/day", "50/hour"]
