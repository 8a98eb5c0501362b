"""Health endpoints for load balancers and orchestrators: unauthenticated, cheap, never
throttled, never logged (`portal.middleware.QUIET_PATHS`), exempt from the HTTPS redirect
(`SECURE_REDIRECT_EXEMPT`).

- `GET /healthz`: the process answers (no database, no cache): liveness.
- `GET /readyz`: the database answers, the shared cache (Redis) answers, and every migration is
  applied: readiness. 200 or 503, with each check's outcome:
  `{"status": "ok"|"unavailable", "checks": {"database": "ok", "cache": "ok",
  "migrations": "ok"}}`; a failed check says `"error: <exception class>"` or
  `"pending: <n>"` (never a connection string)."""

from __future__ import annotations

from django.core.cache import cache
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.http import JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

READY_KEY = "readyz"


def _database() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return "ok"


def _cache() -> str:
    cache.set(READY_KEY, 1, timeout=10)
    return "ok" if cache.get(READY_KEY) == 1 else "error: the cache does not keep values"


def _migrations() -> str:
    """About 10 ms once the migration modules are imported: one query of django_migrations."""
    executor = MigrationExecutor(connection)
    plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
    return f"pending: {len(plan)}" if plan else "ok"


def _run(check) -> str:
    try:
        return check()
    except Exception as exc:  # a failed dependency is the answer, not an error of the probe
        return f"error: {type(exc).__name__}"


@require_GET
@never_cache
def healthz(request):
    """Liveness: 200 while the process serves requests."""
    return JsonResponse({"status": "ok"})


@require_GET
@never_cache
def readyz(request):
    """Readiness: 200 when the database, the cache and the migrations are in order, else 503."""
    results = {"database": _run(_database)}
    results["cache"] = _run(_cache)
    # Without a database the migrations cannot be read: said once, under "database".
    results["migrations"] = _run(_migrations) if results["database"] == "ok" else "unknown"
    ok = all(v == "ok" for v in results.values())
    response = JsonResponse(
        {"status": "ok" if ok else "unavailable", "checks": results}, status=200 if ok else 503
    )
    response._has_been_logged = True  # Django's request logger would log the 503
    return response
