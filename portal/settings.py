"""Settings, 12-factor: everything that differs between installations comes from the environment.

Variables (all optional unless said):
- `DEBUG` (default off). With it off, `SECRET_KEY` is required.
- `DATABASE_URL`: the database of record, PostgreSQL in production and tests. Unset, a SQLite file
  (`demo.sqlite3`, WAL, `transaction_mode=IMMEDIATE`) serves the one-command demo only.
- `DATABASE_POOL_MAX_SIZE` (default 16): PostgreSQL connections per process, pooled (psycopg_pool);
  `DATABASE_POOL_TIMEOUT` (default 10 s) how long a request waits for one. 0 turns the pool off
  for a persistent connection per thread (`CONN_MAX_AGE`, default 60 s; WSGI servers only).
- `DATABASE_PREPARED_STATEMENTS` (default on): the metering path's statements are prepared on
  each PostgreSQL connection after 5 runs (`portal.statements.prepared_cursor`). Turn it off
  behind a pooler that cannot keep prepared statements (PgBouncer before 1.21 in transaction
  mode).
- `CELERY_BROKER_URL` (Redis or RabbitMQ), `CELERY_RESULT_BACKEND`. Unset, tasks run eagerly.
- `ALLOWED_HOSTS`, `CSRF_TRUSTED_ORIGINS` (comma-separated), `SECURE_SSL_REDIRECT`.
- `EMAIL_URL` (for example `smtp+tls://user:pass@host:587`), `DEFAULT_FROM_EMAIL`.
- `CACHE_URL` (or `REDIS_URL`): the shared cache that holds throttles and login lockouts, e.g.
  `redis://127.0.0.1:6379/1` (django-redis). Unset, that address is the default, except for the
  demo (`DEBUG` on and no `CELERY_BROKER_URL`), which runs without Redis on a per-process LocMem
  cache: its throttles and lockouts are then counted per process, acceptable for one demo process
  only.
- `TRUSTED_PROXY_COUNT` (default 0): how many proxies in front of the portal append to
  `X-Forwarded-For`; the client IP is the Nth address from the right (`portal.net.client_ip`).
  With 0 the header is ignored.
- `LOGIN_FAILURE_LIMIT` (default 10), `LOGIN_COOLOFF_MINUTES` (default 15): failed logins per
  account and per client IP before logins pause (django-axes), and for how long.
- `THROTTLE_INVITATIONS`, `THROTTLE_KEYS` (default `60/hour` each, per organization).
- `THROTTLE_PASSWORD_RESET_EMAIL` (default `3/hour`), `THROTTLE_PASSWORD_RESET_IP` (default
  `20/hour`): password reset e-mails per e-mail address and per client IP; over either, the form
  answers as usual and sends nothing (`portal.views.PasswordResetView`).
- `FIELD_ENCRYPTION_KEY`: Fernet key(s), comma-separated, newest first, that encrypt secrets at
  rest (webhook signing secrets). Required with `DEBUG` off (`check --deploy` says so); with
  `DEBUG` on, derived from `SECRET_KEY`.
- `WEBHOOK_ALLOW_PRIVATE_NETWORKS` (default off): allow webhook URLs on loopback, private and
  link-local addresses (tests and local development only).
- `GATEWAY_ALLOW_PRIVATE_UPSTREAMS` (default off): allow gateway upstreams (`/api/v1/upstreams`)
  on loopback, private and link-local addresses (a vLLM or Ollama on the operator's network).
- `WEBHOOK_TIMEOUT_SECONDS` (default 10), `WEBHOOK_RETRY_DELAYS` (seconds between attempts,
  comma-separated; default Standard Webhooks' schedule over about a day).
- `TWILIO_ACCOUNT_SID`, `TWILIO_AUTH_TOKEN`, `TWILIO_FROM`, `TWILIO_API_BASE`: SMS notifications.
- `STATIC_ROOT`: where `collectstatic` puts the static files (WhiteNoise serves them, compressed
  and with hashed names when `DEBUG` is off).
- `MEDIA_ROOT` (default `media/`), `MEDIA_URL`: the default storage of generated files (invoice,
  credit note and statement PDFs); private, downloaded through the portal only.

Operations (docs/operations.md):
- `METRICS_TOKEN`: turns on `/metrics` (Prometheus), readable with
  `Authorization: Bearer <METRICS_TOKEN>` (401 without it). Unset, `/metrics` answers 404.
- `PROMETHEUS_MULTIPROC_DIR`: an empty directory shared by the gunicorn workers of one machine
  (emptied before each start), so that a scrape adds up every worker's counters
  (prometheus-client's multiprocess mode). Unset, each process counts its own.
- `LOG_FORMAT` (`json`, the default with `DEBUG` off; `text` with it on): JSON lines with the
  request id, organization and API key prefix (`portal.logs`). `LOG_LEVEL` (default `WARNING`)
  of the root logger; `ACCESS_LOG` (default on): one INFO line per request (`portal.access`;
  not the health and metrics endpoints).
- `SENTRY_DSN`: report errors to Sentry (sentry-sdk, initialised only when set), with
  `SENTRY_ENVIRONMENT` (default `production`), `SENTRY_RELEASE`, `SENTRY_TRACES_SAMPLE_RATE`
  (default 0: errors only). No personal data is sent, and secrets are masked.
- `CSP_REPORT_URI`: where browsers report Content-Security-Policy violations (optional). The
  policy itself (same-origin scripts, styles, images and connections; no inline script or style;
  no framing) holds whatever `DEBUG` is.
- `SECURE_SSL_REDIRECT` also turns on HSTS (`SECURE_HSTS_SECONDS`, default a year) and secure
  session and CSRF cookies; `/healthz`, `/readyz` and `/metrics` are exempt from the redirect
  (probes and scrapes often speak plain HTTP inside the network).
"""

from datetime import timedelta
from pathlib import Path

import environ
from celery.schedules import crontab
from whitenoise.compress import Compressor

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False) if (BASE_DIR / ".env").exists() else None

DEBUG = env.bool("DEBUG", default=False)
SECRET_KEY = env("SECRET_KEY", default="insecure-key-for-debug-only" if DEBUG else "")
if not SECRET_KEY:
    raise environ.ImproperlyConfigured("SECRET_KEY is required when DEBUG is off")

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "testserver"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "guardian",
    "axes",
    "django_htmx",
    "template_partials",  # a fragment and its page in one template (pages)
    "django_celery_beat",  # the beat schedule in the database
    "csp",  # the Content-Security-Policy header (django-csp 4); its checks catch old settings
    "portal",
    "accounts",
    "notifications",
    "credits",
    "billing",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "portal.middleware.RequestContextMiddleware",  # request id, access log, request metrics
    "portal.middleware.ApiErrorFormatMiddleware",  # Django's own error pages as JSON under /api/
    "portal.middleware.NoStoreMiddleware",  # no-store unless a view says otherwise
    "csp.middleware.CSPMiddleware",
    "portal.middleware.RejectNulMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django_htmx.middleware.HtmxMiddleware",  # request.htmx on the pages
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "axes.middleware.AxesMiddleware",  # last: turns a lockout into its 429 page
]

ROOT_URLCONF = "portal.urls"
WSGI_APPLICATION = "portal.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "accounts.context_processors.organizations",
            ],
        },
    },
]

# The demo database: SQLite with WAL and IMMEDIATE transactions (writers queue instead of failing).
DATABASES = {
    "default": env.db_url("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'demo.sqlite3'}")
}
# SQLite (the demo) cannot make a unique constraint with NULLS NOT DISTINCT (the once-per-hour
# notifications); PostgreSQL, the database of record, does.
SQLITE = DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3"
SILENCED_SYSTEM_CHECKS = ["models.W047"] if SQLITE else []
if SQLITE:
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {"transaction_mode": "IMMEDIATE", "init_command": "PRAGMA journal_mode=WAL;", "timeout": 30}
    )
elif DATABASE_POOL_MAX_SIZE := env.int("DATABASE_POOL_MAX_SIZE", default=16):
    # PostgreSQL through a pool per process (psycopg_pool, Django's `pool` option): the ASGI
    # server runs each request in a thread of its own, and a persistent connection per thread
    # would outlive its thread (PostgreSQL runs out of connections under load). A request takes
    # a connection when it first queries and gives it back when it ends; one waits at most
    # DATABASE_POOL_TIMEOUT seconds for one. Connections: workers x DATABASE_POOL_MAX_SIZE.
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": 1,
        "max_size": DATABASE_POOL_MAX_SIZE,
        "timeout": env.float("DATABASE_POOL_TIMEOUT", default=10.0),
    }
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True  # the pool checks a connection it lends
else:  # DATABASE_POOL_MAX_SIZE=0: a persistent connection per thread (WSGI servers only)
    DATABASES["default"]["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=60)
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
if not SQLITE:
    # psycopg prepares a statement once a connection has run it 5 times (Django turns that off by
    # default); only server-bound cursors (`portal.statements.prepared_cursor`) can be prepared,
    # Django's own cursors bind parameters on the client.
    DATABASES["default"].setdefault("OPTIONS", {})["prepare_threshold"] = (
        5 if env.bool("DATABASE_PREPARED_STATEMENTS", default=True) else None
    )
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_USER_MODEL = "accounts.User"
AUTHENTICATION_BACKENDS = [
    "portal.throttling.LoginAttemptsBackend",  # django-axes: refuses locked-out logins first
    "django.contrib.auth.backends.ModelBackend",
    "guardian.backends.ObjectPermissionBackend",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"
GUARDIAN_RAISE_403 = False
ANONYMOUS_USER_NAME = None  # guardian: no anonymous user row

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(env("STATIC_ROOT", default=str(BASE_DIR / "staticfiles")))
# (portal/static is found as the `portal` app's static directory.)
# WhiteNoise serves them; in production compressed (gzip, Brotli) and with content-hashed names,
# cached for ever (run `collectstatic`; `make static` first copies the vendored npm files).
# Source maps are for browser tools only: not compressed, which halves collectstatic's time.
WHITENOISE_SKIP_COMPRESS_EXTENSIONS = [*Compressor.SKIP_COMPRESS_EXTENSIONS, "map"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if DEBUG
        else "whitenoise.storage.CompressedManifestStaticFilesStorage"
    },
}

# Uploaded and generated files (invoice, credit note and statement PDFs) go through the default
# storage: files under MEDIA_ROOT unless STORAGES names another backend (S3 through
# django-storages: see the README). They are private: served only by the portal's authorized
# download views, never by the web server under MEDIA_URL.
MEDIA_ROOT = Path(env("MEDIA_ROOT", default=str(BASE_DIR / "media")))
MEDIA_URL = env("MEDIA_URL", default="media/")

# Request bodies: the API refuses larger ones with 413 (a batch of 1,000 usage events fits).
DATA_UPLOAD_MAX_MEMORY_SIZE = env.int("DATA_UPLOAD_MAX_MEMORY_SIZE", default=2 * 1024 * 1024)

EMAIL_CONFIG = env.email_url("EMAIL_URL", default="consolemail://")
vars().update(EMAIL_CONFIG)
DEFAULT_FROM_EMAIL = env("DEFAULT_FROM_EMAIL", default="portal@localhost")

REST_FRAMEWORK = {
    # Keys for integrations; the browser session too (CSRF enforced), so Swagger's "Try it out"
    # works for a logged-in member.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "accounts.authentication.APIKeyAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["portal.permissions.HasScope"],
    "DEFAULT_PARSER_CLASSES": ["portal.parsers.LimitedJSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_PAGINATION_CLASS": "portal.pagination.CursorPagination",
    "PAGE_SIZE": 50,
    "EXCEPTION_HANDLER": "portal.errors.exception_handler",
    "UNAUTHENTICATED_USER": None,
    "DEFAULT_THROTTLE_CLASSES": ["portal.throttling.ScopedRateThrottle"],
    "DEFAULT_THROTTLE_RATES": {
        "invitations": env("THROTTLE_INVITATIONS", default="60/hour"),
        "keys": env("THROTTLE_KEYS", default="60/hour"),
        "openrouter_sync": env("THROTTLE_OPENROUTER_SYNC", default="60/hour"),
        # The password reset form's e-mails (portal.throttling.password_reset_refused).
        "password_reset_email": env("THROTTLE_PASSWORD_RESET_EMAIL", default="3/hour"),
        "password_reset_ip": env("THROTTLE_PASSWORD_RESET_IP", default="20/hour"),
    },
    "TEST_REQUEST_DEFAULT_FORMAT": "json",
    "URL_FORMAT_OVERRIDE": None,  # `format` is a report parameter (json|csv)
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Credit portal API",
    "DESCRIPTION": (
        "Prepaid AI credits for organizations: ledger, usage metering, budgets and billing. "
        "1 credit = 1 USD of model usage. Authenticate with `Authorization: Bearer <API key>`. "
        'Every error has the shape `{"error": {"code": <HTTP status>, "message": str, '
        '"metadata": {"type": str, ...}}}`.'
    ),
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",  # self-hosted: no CDN
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "SCHEMA_PATH_PREFIX": r"/api/v1",
    "SERVE_AUTHENTICATION": [],
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "ENUM_NAME_OVERRIDES": {
        "RoleEnum": "accounts.roles.Role",
        "TeamRoleEnum": "accounts.roles.TeamRole",
        "KeyKindEnum": "accounts.roles.KeyKind",
        "AccountKindEnum": "credits.models.LedgerAccount.Kind",
        # daily, weekly, monthly: a key's limit_reset and a guardrail's reset_interval
        "ResetIntervalEnum": "credits.models.Guardrail.Interval",
        "InvoiceStatusEnum": "billing.models.Invoice.Status",
        "UpstreamKindEnum": "credits.models.Upstream.Kind",
    },
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "portal.api.add_error_responses",
    ],
}

# Celery: a broker from the environment, or eager execution for the demo.
CELERY_BROKER_URL = env("CELERY_BROKER_URL", default="")
CELERY_RESULT_BACKEND = env("CELERY_RESULT_BACKEND", default=CELERY_BROKER_URL or None)
CELERY_TASK_ALWAYS_EAGER = not CELERY_BROKER_URL
# The broker and result store over Redis: a Redis that is down fails a send in seconds (and the
# write that queued it stands: every side effect has a sweep or an outbox behind it).
CELERY_BROKER_TRANSPORT_OPTIONS = {"socket_timeout": 5, "socket_connect_timeout": 2}
CELERY_REDIS_SOCKET_TIMEOUT = 5
CELERY_REDIS_SOCKET_CONNECT_TIMEOUT = 2
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TIMEZONE = "UTC"
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_DEFAULT_QUEUE = env("CELERY_TASK_DEFAULT_QUEUE", default="celery")
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# The schedule lives in the database (django-celery-beat); `manage.py beat_schedule_sync` writes
# CELERY_BEAT_SCHEDULE there (`make worker` and the README's upgrade steps run it).
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CREDITS_EXPIRING_DAYS = env.int("CREDITS_EXPIRING_DAYS", default=7)  # credits.expiring
# Usage rollups (credits.services.rollups): events recorded more than USAGE_ROLLUP_LAG_SECONDS
# ago (longer than any transaction that records usage) are rolled, at most
# USAGE_ROLLUP_STEP_HOURS of recorded time per transaction; reads add the rest from raw events.
USAGE_ROLLUP_LAG = timedelta(seconds=env.int("USAGE_ROLLUP_LAG_SECONDS", default=120))
USAGE_ROLLUP_STEP = timedelta(hours=env.int("USAGE_ROLLUP_STEP_HOURS", default=6))
# Group commit (credits.services.group_commit): concurrent single usage events of one
# attribution in a process share one transaction, and so do the gateway's holds (of one
# attribution) and captures (on one account); at most USAGE_GROUP_MAX calls a group.
USAGE_GROUP_COMMIT = env.bool("USAGE_GROUP_COMMIT", default=True)
USAGE_GROUP_MAX = env.int("USAGE_GROUP_MAX", default=100)
# Work queued after a commit (an invitation e-mail, a document's PDF, an export) and still not
# done this long after is taken to be lost (a broker that was down, a worker killed): the beat
# sweeps (accounts.tasks, billing.tasks) send it again.
SWEEP_AFTER = timedelta(seconds=env.int("SWEEP_AFTER_SECONDS", default=60))
CELERY_BEAT_SCHEDULE = {
    "holds-expire": {"task": "credits.tasks.holds_expire", "schedule": timedelta(minutes=1)},
    "lots-expire": {"task": "credits.tasks.lots_expire", "schedule": timedelta(minutes=5)},
    "ledger-verify": {"task": "credits.tasks.ledger_verify", "schedule": crontab(minute=7)},
    # genai-prices' published data; offline, the installed prices stay.
    "prices-sync": {
        "task": "credits.tasks.prices_sync",
        "schedule": crontab(minute=23, hour="*/6"),
    },
    # The watches (credits.services.watch): each tells at most once a day per account, lot,
    # organization.
    "balances-low": {"task": "credits.tasks.balances_low_check", "schedule": crontab(minute=13)},
    "credits-expiring": {
        "task": "credits.tasks.credits_expiring_check",
        "schedule": crontab(minute=17, hour=7),
    },
    "daily-summaries": {
        "task": "credits.tasks.daily_summaries_send",
        "schedule": crontab(minute=10, hour=6),
    },
    # Budgets (credits.services.alerts): a new window after an exhausted one, within a minute
    # of its start in any time zone; spend projected past a limit, hourly.
    "budgets-recovered": {
        "task": "credits.tasks.budgets_recovered_check",
        "schedule": timedelta(minutes=1),
    },
    "budgets-forecast": {
        "task": "credits.tasks.budgets_forecast_check",
        "schedule": crontab(minute=27),
    },
    # Usage into its rollups for reads, up to a lag behind now (credits.services.rollups).
    "usage-rollup": {"task": "credits.tasks.usage_rollup", "schedule": timedelta(minutes=1)},
    # The usage table's monthly partitions, two months ahead (credits.services.usage_partitions).
    "usage-partitions": {
        "task": "credits.tasks.usage_partitions_ensure",
        "schedule": crontab(minute=47, hour=3),
    },
    # Pending purchase orders past their age (billing.tasks.orders_expire).
    "orders-expire": {"task": "billing.tasks.orders_expire", "schedule": timedelta(minutes=15)},
    # Invitation e-mails a broker that was down or a lost worker left unsent.
    "invitations-sweep": {
        "task": "accounts.tasks.invitations_sweep",
        "schedule": timedelta(minutes=1),
    },
    # Documents without their PDF, export jobs no worker has (billing.tasks).
    "documents-sweep": {"task": "billing.tasks.documents_sweep", "schedule": timedelta(minutes=1)},
    "exports-sweep": {"task": "billing.tasks.exports_sweep", "schedule": timedelta(minutes=1)},
    # Outbox messages a lost worker left pending (notifications.tasks.outbox_sweep).
    "outbox-sweep": {"task": "notifications.tasks.outbox_sweep", "schedule": timedelta(minutes=1)},
    # Monthly statements: hourly, for the organizations whose month has just ended in their
    # time zone (billing.services.statements.statements_generate_due).
    "statements-monthly": {
        "task": "billing.tasks.statements_generate_due",
        "schedule": crontab(minute=5),
    },
    # Automatic top-up: rules below their threshold that no debit started, charges to resend.
    "topup-sweep": {"task": "billing.tasks.topup_sweep", "schedule": timedelta(minutes=1)},
}

# The shared cache (see the module docstring): throttles and login lockouts, across processes.
CACHE_URL = env("CACHE_URL", default=env("REDIS_URL", default=""))
if not CACHE_URL and (CELERY_BROKER_URL or not DEBUG):
    CACHE_URL = "redis://127.0.0.1:6379/1"
CACHES = {
    "default": env.cache_url_config(CACHE_URL)
    if CACHE_URL
    else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
}
if not CACHE_URL:
    SILENCED_SYSTEM_CHECKS.append("axes.W001")  # the demo's LocMem, said above
elif CACHES["default"]["BACKEND"] == "django_redis.cache.RedisCache":
    # A Redis that is down or unreachable answers in a second, not in the OS's TCP timeouts:
    # the callers fail open or closed at once (portal.throttling, portal.views.LoginView).
    CACHES["default"].setdefault("OPTIONS", {}).update(
        {
            "SOCKET_CONNECT_TIMEOUT": env.float("CACHE_SOCKET_TIMEOUT", default=1.0),
            "SOCKET_TIMEOUT": env.float("CACHE_SOCKET_TIMEOUT", default=1.0),
        }
    )

# Client IPs (audit log, throttles, lockouts): X-Forwarded-For only behind this many proxies.
TRUSTED_PROXY_COUNT = env.int("TRUSTED_PROXY_COUNT", default=0)

# Browser logins (django-axes): per account and per client IP, counted in the shared cache.
AXES_HANDLER = "axes.handlers.cache.AxesCacheHandler"
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]  # either one locks
AXES_FAILURE_LIMIT = env.int("LOGIN_FAILURE_LIMIT", default=10)
AXES_COOLOFF_TIME = timedelta(minutes=env.int("LOGIN_COOLOFF_MINUTES", default=15))
AXES_USERNAME_FORM_FIELD = "username"
AXES_USERNAME_CALLABLE = "portal.throttling.login_username"
AXES_CLIENT_IP_CALLABLE = "portal.net.client_ip"
AXES_HTTP_RESPONSE_CODE = 429
AXES_LOCKOUT_CALLABLE = "portal.views.login_locked_out"
AXES_ENABLE_ADMIN = False  # the cache handler keeps no attempt rows to show
AXES_VERBOSE = False

# Security (manage.py check --deploy is clean when DEBUG is off and these come from the env).
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# Production sets SECURE_SSL_REDIRECT=1 (see README); the HSTS and cookie flags follow it.
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=False)
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=SECURE_SSL_REDIRECT)
CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=SECURE_SSL_REDIRECT)
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31536000 if SECURE_SSL_REDIRECT else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = SECURE_HSTS_SECONDS > 0
SECURE_HSTS_PRELOAD = SECURE_HSTS_SECONDS > 0
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
# Load balancer probes and Prometheus scrapes inside the network: no HTTPS redirect.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]

# Content-Security-Policy (django-csp 4), whatever DEBUG is, so that the page tests run under
# it: scripts, styles, images, fonts and connections from the portal only; no inline script,
# inline style or eval (htmx: `includeIndicatorStyles` and `allowEval` off in base.html); no
# framing. `data:` images are Swagger UI's icons. No `form-action`: it would also block the
# redirects to a payment provider's checkout after a form is posted.
_CSP_SELF = ["'self'"]
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": _CSP_SELF,
        "script-src": _CSP_SELF,
        "style-src": _CSP_SELF,
        "img-src": [*_CSP_SELF, "data:"],
        "font-src": _CSP_SELF,
        "connect-src": _CSP_SELF,
        "object-src": ["'none'"],
        "base-uri": _CSP_SELF,
        "frame-ancestors": ["'none'"],
        **({"report-uri": env("CSP_REPORT_URI")} if env("CSP_REPORT_URI", default="") else {}),
    }
}

# Invitations and API keys.
INVITATION_MAX_AGE = timedelta(days=env.int("INVITATION_MAX_AGE_DAYS", default=7))
PORTAL_BASE_URL = env("PORTAL_BASE_URL", default="http://127.0.0.1:8000")

# Notifications (the `notifications` app). Secrets at rest: Fernet keys, newest first.
FIELD_ENCRYPTION_KEY = env.list("FIELD_ENCRYPTION_KEY", default=[])
if not FIELD_ENCRYPTION_KEY and DEBUG:
    import base64
    import hashlib

    FIELD_ENCRYPTION_KEY = [
        base64.urlsafe_b64encode(hashlib.sha256(f"fernet:{SECRET_KEY}".encode()).digest()).decode()
    ]
WEBHOOK_ALLOW_PRIVATE_NETWORKS = env.bool("WEBHOOK_ALLOW_PRIVATE_NETWORKS", default=False)
GATEWAY_ALLOW_PRIVATE_UPSTREAMS = env.bool("GATEWAY_ALLOW_PRIVATE_UPSTREAMS", default=False)
WEBHOOK_TIMEOUT_SECONDS = env.float("WEBHOOK_TIMEOUT_SECONDS", default=10.0)
# Seconds before each retry (Standard Webhooks / Svix: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h;
# eight attempts over about 27 hours). The message is dead after the last.
WEBHOOK_RETRY_DELAYS = [
    float(s)
    for s in env.list("WEBHOOK_RETRY_DELAYS", default=[5, 300, 1800, 7200, 18000, 36000, 36000])
]
WEBHOOK_DISABLE_AFTER = timedelta(hours=env.float("WEBHOOK_DISABLE_AFTER_HOURS", default=24))
TWILIO_ACCOUNT_SID = env("TWILIO_ACCOUNT_SID", default="")
TWILIO_AUTH_TOKEN = env("TWILIO_AUTH_TOKEN", default="")
TWILIO_FROM = env("TWILIO_FROM", default="")
TWILIO_API_BASE = env("TWILIO_API_BASE", default="https://api.twilio.com")

# Billing (the `billing` app). The seller printed on invoices and credit notes.
BILLING_SELLER = {
    "name": env("BILLING_SELLER_NAME", default="Credit Portal"),
    "address": env("BILLING_SELLER_ADDRESS", default=""),
    "tax_id": env("BILLING_SELLER_TAX_ID", default=""),
    "email": env("BILLING_SELLER_EMAIL", default=""),
}
# Purchases: USD per order (custom amounts), and the packs offered on the page.
BILLING_PURCHASE_MIN = env("BILLING_PURCHASE_MIN", default="5.00")
BILLING_PURCHASE_MAX = env("BILLING_PURCHASE_MAX", default="10000.00")
BILLING_PACKS = env.list("BILLING_PACKS", default=["10", "50", "100", "500"])
# Payment providers (billing.providers): timeouts and retries of every call.
PAYMENT_PROVIDER_TIMEOUT_SECONDS = env.float("PAYMENT_PROVIDER_TIMEOUT_SECONDS", default=15.0)
PAYMENT_PROVIDER_RETRIES = env.int("PAYMENT_PROVIDER_RETRIES", default=2)
STRIPE_SECRET_KEY = env("STRIPE_SECRET_KEY", default="")
STRIPE_WEBHOOK_SECRET = env("STRIPE_WEBHOOK_SECRET", default="")
STRIPE_API_BASE = env("STRIPE_API_BASE", default="https://api.stripe.com")
# OpenRouter credit sync (billing.services.sync): GET {OPENROUTER_API_BASE}/credits with each
# organization's management key, every OPENROUTER_SYNC_MINUTES (the beat schedule below).
OPENROUTER_API_BASE = env("OPENROUTER_API_BASE", default="https://openrouter.ai/api/v1")
OPENROUTER_SYNC_TIMEOUT_SECONDS = env.float("OPENROUTER_SYNC_TIMEOUT_SECONDS", default=10.0)
OPENROUTER_SYNC_RETRIES = env.int("OPENROUTER_SYNC_RETRIES", default=2)  # connection errors only
OPENROUTER_SYNC_MINUTES = env.int("OPENROUTER_SYNC_MINUTES", default=60)
CELERY_BEAT_SCHEDULE["openrouter-sync"] = {
    "task": "billing.tasks.openrouter_sync_all",
    "schedule": timedelta(minutes=OPENROUTER_SYNC_MINUTES),
}
# Stripe's own default tolerance of a webhook's timestamp (replays older than this are refused).
STRIPE_WEBHOOK_TOLERANCE_SECONDS = env.int("STRIPE_WEBHOOK_TOLERANCE_SECONDS", default=300)
COINBASE_COMMERCE_API_KEY = env("COINBASE_COMMERCE_API_KEY", default="")
COINBASE_COMMERCE_WEBHOOK_SECRET = env("COINBASE_COMMERCE_WEBHOOK_SECRET", default="")
COINBASE_COMMERCE_API_BASE = env(
    "COINBASE_COMMERCE_API_BASE", default="https://api.commerce.coinbase.com"
)
# Pending orders: a Stripe Checkout Session is open this long (Stripe: 30 to 1440 minutes); an
# order by card or crypto still pending after BILLING_ORDER_EXPIRE_HOURS (longer than the
# session), or by bank transfer after BILLING_MANUAL_ORDER_EXPIRE_DAYS, expires (beat task).
BILLING_CHECKOUT_MINUTES = env.int("BILLING_CHECKOUT_MINUTES", default=60)
BILLING_ORDER_EXPIRE_HOURS = env.float("BILLING_ORDER_EXPIRE_HOURS", default=24)
BILLING_MANUAL_ORDER_EXPIRE_DAYS = env.float("BILLING_MANUAL_ORDER_EXPIRE_DAYS", default=30)
# What a buyer paying by bank transfer is told (account, IBAN, reference to quote).
BILLING_BANK_TRANSFER_INSTRUCTIONS = env(
    "BILLING_BANK_TRANSFER_INSTRUCTIONS",
    default="Pay the total by bank transfer to the seller's account, quoting the order id. "
    "A billing member confirms the receipt here once the money has arrived.",
)
# Exports (billing.exports): up to BILLING_EXPORT_STREAM_MAX_ROWS rows are streamed at once, larger
# ones are written to a file by a Celery task (on BILLING_EXPORT_QUEUE, default: the default
# queue); rows are read BILLING_EXPORT_CHUNK_ROWS at a time; PDF summaries list at most
# BILLING_EXPORT_PDF_ROWS rows per table. Files go to the default storage (MEDIA_ROOT).
BILLING_EXPORT_STREAM_MAX_ROWS = env.int("BILLING_EXPORT_STREAM_MAX_ROWS", default=10_000)
BILLING_EXPORT_CHUNK_ROWS = env.int("BILLING_EXPORT_CHUNK_ROWS", default=2000)
BILLING_EXPORT_PDF_ROWS = env.int("BILLING_EXPORT_PDF_ROWS", default=25)
BILLING_EXPORT_QUEUE = env("BILLING_EXPORT_QUEUE", default="")
# A job running for longer than this has lost its worker: `billing.tasks.exports_sweep` queues it
# again (an export that really runs this long is then run twice).
BILLING_EXPORT_LEASE_SECONDS = env.int("BILLING_EXPORT_LEASE_SECONDS", default=3600)
# Automatic top-up (billing.services.topup): the back-off after a declined charge (doubling from
# the base, capped), and how long a charge the provider did not answer is retried (same
# idempotency key; Stripe keeps keys 24 hours).
TOPUP_BACKOFF_SECONDS = env.int("TOPUP_BACKOFF_SECONDS", default=3600)
TOPUP_BACKOFF_MAX_SECONDS = env.int("TOPUP_BACKOFF_MAX_SECONDS", default=86400)
TOPUP_CHARGE_RETRY_SECONDS = env.int("TOPUP_CHARGE_RETRY_SECONDS", default=300)
TOPUP_CHARGE_GIVE_UP_SECONDS = env.int("TOPUP_CHARGE_GIVE_UP_SECONDS", default=6 * 3600)

# Operations (docs/operations.md): metrics, logs, error reports.
METRICS_TOKEN = env("METRICS_TOKEN", default="")

LOG_FORMAT = env("LOG_FORMAT", default="text" if DEBUG else "json")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "json": {"()": "portal.logs.JsonFormatter"},
        "text": {
            "()": "portal.logs.TextFormatter",
            "fmt": "%(asctime)s %(levelname)s %(name)s %(message)s",
        },
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT}},
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL", default="WARNING")},
    "loggers": {
        "portal.access": {"level": "INFO" if env.bool("ACCESS_LOG", default=True) else "WARNING"}
    },
}

SENTRY_DSN = env("SENTRY_DSN", default="")
if SENTRY_DSN:
    import sentry_sdk
    from sentry_sdk.integrations.celery import CeleryIntegration
    from sentry_sdk.integrations.django import DjangoIntegration

    from portal.logs import sentry_before_send

    sentry_sdk.init(
        dsn=SENTRY_DSN,
        integrations=[DjangoIntegration(), CeleryIntegration()],
        environment=env("SENTRY_ENVIRONMENT", default="production"),
        release=env("SENTRY_RELEASE", default=None),
        traces_sample_rate=env.float("SENTRY_TRACES_SAMPLE_RATE", default=0.0),
        send_default_pii=False,
        before_send=sentry_before_send,
    )
