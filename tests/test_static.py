"""Production static files: `collectstatic` with DEBUG off, then gunicorn as the README runs it;
WhiteNoise serves the pages' CSS and Swagger UI's JavaScript under content-hashed names,
compressed, cacheable for ever."""

from __future__ import annotations

import os
import re
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from django.db import connection

from .conftest import TEST_CACHE_URL

ROOT = Path(__file__).resolve().parent.parent
GUNICORN = Path(sys.executable).with_name("gunicorn")
HASHED = r"\.[0-9a-f]{12}\."


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def production_server(tmp_path_factory, django_db_setup, django_db_blocker):
    db = connection.settings_dict
    env = {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", "/tmp"),
        "DEBUG": "0",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "ALLOWED_HOSTS": "127.0.0.1",
        "DATABASE_URL": (
            f"postgres://{db['USER']}:{db['PASSWORD'] or ''}@{db['HOST']}:{db['PORT'] or 5432}"
            f"/{db['NAME']}"
        ),
        "CACHE_URL": TEST_CACHE_URL,
        "STATIC_ROOT": str(tmp_path_factory.mktemp("staticfiles")),
    }
    collected = subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert collected.returncode == 0, collected.stderr[-3000:]
    port = _free_port()
    server = subprocess.Popen(
        [str(GUNICORN), "portal.wsgi", "-w", "2", "-b", f"127.0.0.1:{port}"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(base + "/login/", timeout=2)
                break
            except httpx.TransportError:
                assert server.poll() is None, server.stderr.read()[-3000:]
                assert time.monotonic() < deadline, "gunicorn did not start in 60 s"
                time.sleep(0.3)
        yield base
    finally:
        server.terminate()
        server.wait(timeout=30)


def _fetch_asset(base: str, url: str) -> httpx.Response:
    response = httpx.get(base + url, headers={"Accept-Encoding": "gzip"}, timeout=10)
    assert response.status_code == 200, (url, response.status_code)
    assert response.headers["Content-Encoding"] == "gzip"
    assert "immutable" in response.headers["Cache-Control"]
    assert "max-age=315360000" in response.headers["Cache-Control"]
    return response


def test_the_login_page_and_its_css_are_served_hashed_and_compressed(production_server):
    page = httpx.get(production_server + "/login/", timeout=10)
    assert page.status_code == 200
    css = re.search(r'href="(/static/portal/portal' + HASHED + r'css)"', page.text)
    assert css, page.text[:1000]
    assert "color" in _fetch_asset(production_server, css.group(1)).text
    js = re.search(r'src="(/static/portal/portal' + HASHED + r'js)"', page.text)
    assert js, page.text[:1000]
    _fetch_asset(production_server, js.group(1))
    # the unhashed name is served too, but not cached for ever
    plain = httpx.get(production_server + "/static/portal/portal.css", timeout=10)
    assert plain.status_code == 200 and "immutable" not in plain.headers["Cache-Control"]


def test_swagger_ui_and_its_javascript_are_served(production_server):
    page = httpx.get(production_server + "/api/v1/schema/swagger/", timeout=10)
    assert page.status_code == 200
    scripts = re.findall(r'src="(/static/[^"]+' + HASHED + r'js)"', page.text)
    bundle = [s for s in scripts if "swagger-ui-bundle" in s]
    assert bundle, page.text[:2000]
    assert len(_fetch_asset(production_server, bundle[0]).content) > 100_000
    css = re.findall(r'href="(/static/[^"]+' + HASHED + r'css)"', page.text)
    assert css, page.text[:2000]
    _fetch_asset(production_server, css[0])
