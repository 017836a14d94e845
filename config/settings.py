"""Django settings for the Trading Demo server.

Every value that varies between deployments is read from the environment here, with the
variable names of the original server kept (SPEC §4). ``config.settings_test`` imports this
module and overrides what tests need.
"""

from __future__ import annotations

import sys
from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from config.env import (
    env_bool,
    env_decimal,
    env_float,
    env_int,
    env_list,
    env_str,
    parse_rate,
)

BASE_DIR = Path(__file__).resolve().parent.parent

APP_NAME = "Trading Demo Server"
APP_VERSION = "0.1.0"

# --- environment -------------------------------------------------------------------------------

DJANGO_ENV = env_str("DJANGO_ENV", "development").strip().lower()
if DJANGO_ENV not in {"development", "production", "test"}:
    raise ImproperlyConfigured(
        f"DJANGO_ENV must be 'development' or 'production', got {DJANGO_ENV!r}"
    )
PRODUCTION = DJANGO_ENV == "production"
DEBUG = env_bool("DEBUG", not PRODUCTION)

_DEV_SECRET_KEY = "dev-only-insecure-key-never-use-in-production-0123456789abcdef"  # noqa: S105
SECRET_KEY = env_str("SECRET_KEY")
if not SECRET_KEY:
    if PRODUCTION:
        raise ImproperlyConfigured(
            "SECRET_KEY is required when DJANGO_ENV=production. Generate one with: "
            "python -c 'import secrets; print(secrets.token_urlsafe(64))'"
        )
    SECRET_KEY = _DEV_SECRET_KEY
# Old keys still accepted for signatures (sessions) while a new SECRET_KEY rolls out.
SECRET_KEY_FALLBACKS = env_list("SECRET_KEY_FALLBACKS")

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "" if PRODUCTION else "*")
if PRODUCTION and not ALLOWED_HOSTS:
    raise ImproperlyConfigured("ALLOWED_HOSTS is required when DJANGO_ENV=production")

HOST = env_str("HOST", "0.0.0.0")
PORT = env_int("PORT", 3000, minimum=0)

# --- applications ------------------------------------------------------------------------------

INSTALLED_APPS = [
    # daphne replaces runserver with its ASGI server; it must precede staticfiles.
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "rest_framework",
    "rest_framework.authtoken",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "drf_problems",
    "corsheaders",
    # Login throttling; before "accounts", whose admin module adapts axes' lockout screens.
    "axes",
    "accounts",
    "api",
    "runtime",
    "grpc_clients",
    "agents",
    "trades",
    "oversight",
    "metering",
    "realtime",
    "dashboard",
    "mcp_tools",
]

MIDDLEWARE = [
    "observability.middleware.RequestIdMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.csp.ContentSecurityPolicyMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "corsheaders.middleware.CorsMiddleware",
    "django.middleware.gzip.GZipMiddleware",
    # Abuse limits (api.limits): 413 over the body limit, 429 over RATE_LIMIT per address
    # for anonymous requests (per user for authenticated ones: a DRF throttle).
    "api.limits.BodyLimitMiddleware",
    "api.limits.NulCharacterMiddleware",
    "api.limits.RateLimitMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # After every middleware that handles a response (django-axes: turns a locked-out login
    # form into the lockout page, accounts.lockout).
    "axes.middleware.AxesMiddleware",
    # Counts `api_calls` for every authenticated request made for an agent. Innermost, and
    # synchronous only (it declares no async support), like every view: under ASGI
    # (`manage.py serve`) Django then runs each middleware around it in its synchronous mode
    # too, so a request's whole chain runs in one worker thread instead of hopping between
    # threads and the event loop at every hook. Keep the innermost middleware synchronous.
    "metering.middleware.ApiCallMeteringMiddleware",
]

ROOT_URLCONF = "config.urls"
ASGI_APPLICATION = "config.asgi.application"
WSGI_APPLICATION = "config.wsgi.application"

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
                "django.template.context_processors.csp",
            ],
        },
    },
]

# --- database ----------------------------------------------------------------------------------


def _database_from_env() -> dict:
    url = env_str("DATABASE_URL")
    if not url:
        # The original server's variable: a path to the SQLite file.
        path = env_str("DATABASE_PATH", str(BASE_DIR / "data" / "trading-demo.db"))
        url = f"sqlite:///{Path(path).resolve()}"
    config = dj_database_url.parse(url)
    if config["ENGINE"] == "django.db.backends.sqlite3":
        name = config["NAME"]
        if name and name != ":memory:":
            Path(name).parent.mkdir(parents=True, exist_ok=True)
        config["OPTIONS"] = {
            # BEGIN IMMEDIATE takes the write lock up front, so concurrent writers queue on
            # busy_timeout instead of failing with "database is locked" on lock upgrade.
            "transaction_mode": "IMMEDIATE",
            "timeout": 20,
            "init_command": (
                "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON;"
            ),
        }
    elif config["ENGINE"] in {
        "django.db.backends.postgresql",
        "django.db.backends.postgresql_psycopg2",
    }:
        config["ENGINE"] = "django.db.backends.postgresql"
        # Parameters bound by the server, and each statement prepared on a connection the
        # first time it runs there (after DATABASE_PREPARE_THRESHOLD runs): PostgreSQL then
        # parses and plans an order's statements once per connection, not on every order.
        # Behind a pooler in transaction mode, set DATABASE_SERVER_SIDE_BINDING=false.
        options = {}
        if env_bool("DATABASE_SERVER_SIDE_BINDING", True):
            options = {
                "server_side_binding": True,
                "prepare_threshold": env_int("DATABASE_PREPARE_THRESHOLD", 0, minimum=0),
            }
        pooled = env_bool("DATABASE_POOL", True)
        # A round trip to check the connection before each request's first query. Pooled,
        # the serving processes check the pool's idle connections every
        # DATABASE_POOL_CHECK_INTERVAL seconds instead (runtime.jobs), off the requests.
        config["CONN_HEALTH_CHECKS"] = env_bool("DATABASE_HEALTH_CHECKS", not pooled)
        if pooled:
            # Django's connections are per thread: the request threads (gunicorn's, or
            # Django's own under ASGI), the thread of the WebSocket consumers' queries and
            # each background job. The
            # pool bounds what a process holds (DATABASE_POOL_MAX_SIZE), hands out a warm
            # connection and takes it back when the request or the job's step ends, so an
            # idle thread holds none. A thread that comes and goes (a test's, a command's)
            # never strands a backend either. (Pooling excludes CONN_MAX_AGE.)
            config["CONN_MAX_AGE"] = 0
            config["OPTIONS"] = {
                **options,
                "pool": {
                    "min_size": env_int("DATABASE_POOL_MIN_SIZE", 2, minimum=1),
                    "max_size": env_int("DATABASE_POOL_MAX_SIZE", 20, minimum=1),
                    "timeout": env_float("DATABASE_POOL_TIMEOUT", 10.0),
                },
            }
        else:
            config["CONN_MAX_AGE"] = env_int("DATABASE_CONN_MAX_AGE", 60, minimum=0)
            config["OPTIONS"] = options
    return config


DATABASES = {"default": _database_from_env()}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- cache, channel layer ----------------------------------------------------------------------

REDIS_URL = env_str("REDIS_URL")
if REDIS_URL:
    from redis.exceptions import ConnectionError as RedisConnectionError

    # django-redis rather than Django's own Redis backend: it is the Redis backend
    # django-ratelimit supports (its atomic increment is one Lua call), and it keeps one Redis
    # client per process where Django's builds a client for every cache operation. Every
    # API request counts against a rate limit here (an order against two), so the cost of a
    # cache operation is paid on every request.
    CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": "trading-demo",
        }
    }
    # Token authentication keeps who a token belongs to in this cache (api.authentication):
    # every process sees a revocation at once because they all read the same Redis.
    API_TOKEN_CACHE_SECONDS = env_int("API_TOKEN_CACHE_SECONDS", 300, minimum=0)
    # Redis pub/sub (the default): a group send is one PUBLISH, and each serving process
    # receives it once and hands it to its own subscribed consumers. The list-based core layer
    # ("core") writes one message per subscribed channel in a Lua script and every consumer
    # pops its own: with N WebSocket clients on one market tick, N writes and N reads instead
    # of one. Neither keeps a message for a consumer that is gone or reconnecting; agent
    # events are replayed from the seq buffer (realtime/), the market streams anew.
    # docs/performance.md has the measurements.
    CHANNEL_LAYER_KIND = env_str("CHANNEL_LAYER", "pubsub")
    if CHANNEL_LAYER_KIND not in {"pubsub", "core"}:
        raise ImproperlyConfigured("CHANNEL_LAYER must be 'pubsub' or 'core'")
    _redis_host = {
        "address": REDIS_URL,
        # Retry a command once on a fresh connection when a pooled one turns out dead (Redis
        # restarted): otherwise the first subscribe or publish after Redis comes back fails on
        # each stale connection.
        "retry_on_error": [RedisConnectionError],
    }
    if CHANNEL_LAYER_KIND == "pubsub":
        # Pub/sub channels belong to the whole Redis server, not to a database: the prefix
        # names the database so that deployments sharing a server (redis://…/1, …/2) stay
        # apart, as their keys do.
        from redis.connection import parse_url as _parse_redis_url

        _redis_db = _parse_redis_url(REDIS_URL).get("db", 0)
        CHANNEL_LAYERS = {
            "default": {
                "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
                "CONFIG": {"hosts": [_redis_host], "prefix": f"trading-demo:{_redis_db}"},
            }
        }
    else:
        CHANNEL_LAYERS = {
            "default": {
                "BACKEND": "channels_redis.core.RedisChannelLayer",
                "CONFIG": {
                    # max_connections: the core layer takes a pooled connection per command in
                    # flight (group_add/discard on subscribe, the Lua group_send of every event,
                    # the BZPOPMIN receive loop), and redis-py's pool raises "Too many
                    # connections" beyond its limit instead of waiting, so redis-py's default
                    # fails subscriptions once a process serves more clients than it allows.
                    # A consumer handles one message at a time, so one process needs at most
                    # one connection per client plus the receive loop and the publishers;
                    # connections open only on demand.
                    "hosts": [
                        {
                            **_redis_host,
                            "max_connections": env_int(
                                "REDIS_CHANNEL_LAYER_MAX_CONNECTIONS", 1200, minimum=10
                            ),
                        }
                    ],
                    "prefix": "trading-demo",
                    "capacity": 2000,
                    "expiry": 30,
                },
            }
        }
else:
    # A process's own memory cannot hear of a token revoked by another process (the admin
    # of a second server, `manage.py shell`): without Redis every request reads its token.
    API_TOKEN_CACHE_SECONDS = 0
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
            "LOCATION": "trading-demo",
        }
    }
    CHANNEL_LAYERS = {
        "default": {"BACKEND": "channels.layers.InMemoryChannelLayer", "CONFIG": {"capacity": 2000}}
    }
    # django-ratelimit refuses a cache that is not shared between processes (E003) and warns
    # about one without atomic increments (W001). The embedded default is one process, where
    # LocMemCache is shared by every thread and increments under its own lock; with REDIS_URL
    # set (any multi-process deployment) the Redis cache is used and the checks pass.
    SILENCED_SYSTEM_CHECKS = ["django_ratelimit.E003", "django_ratelimit.W001"]

# --- auth --------------------------------------------------------------------------------------

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
OPERATORS_GROUP = "operators"
# Password guessing is throttled by django-axes on every login: /admin/login/,
# /dashboard/login/ and POST /api/v1/auth/token. After LOGIN_FAILURE_LIMIT failures for one
# username, or from one address (api.limits.client_ip, as the rate limit counts them),
# logins of that username or from that address are refused for LOGIN_COOLOFF_SECONDS, the
# right password included; another failure meanwhile starts the cool-off again. Forms show
# the lockout page (accounts.lockout), the API answers 429 rate-limited with Retry-After.
# Failures are rows of the database (AccessAttempt): operators unlock by deleting them in
# the admin (Axes → Access attempts).
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",  # first: refuses a locked-out login
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env_int("LOGIN_FAILURE_LIMIT", 10, minimum=1)
AXES_COOLOFF_TIME = timedelta(seconds=env_int("LOGIN_COOLOFF_SECONDS", 900, minimum=1))
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
AXES_CLIENT_IP_CALLABLE = "api.limits.client_ip"
AXES_LOCKOUT_CALLABLE = "accounts.lockout.lockout_response"
AXES_VERBOSE = False
# The admin's and the dashboard's one-time messages live in the session, which every user who
# can receive one has. Django's default (a signed cookie, falling back to the session) builds
# both stores and a cookie signer for every request, API calls included, that never use them.
MESSAGE_STORAGE = "django.contrib.messages.storage.session.SessionStorage"
LOGIN_URL = "/admin/login/"
LOGIN_REDIRECT_URL = "/dashboard/"

# --- i18n / static -----------------------------------------------------------------------------

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
# Outside production, WhiteNoise serves the apps' static files straight from their folders, so
# `make run` needs no collectstatic; production serves the collected, hashed files.
WHITENOISE_USE_FINDERS = not PRODUCTION
WHITENOISE_AUTOREFRESH = DEBUG
if not PRODUCTION:
    STATIC_ROOT.mkdir(exist_ok=True)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "whitenoise.storage.CompressedManifestStaticFilesStorage"
            if PRODUCTION
            else "django.contrib.staticfiles.storage.StaticFilesStorage"
        )
    },
}

# --- HTTP hardening ----------------------------------------------------------------------------

DATA_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024 * 1024  # the original server's 10 MB body limit
CORS_ALLOWED_ORIGINS = env_list("CLIENT_URL", "http://localhost:5173")
CORS_ALLOW_HEADERS = (
    "accept",
    "authorization",
    "content-type",
    "idempotency-key",
    "x-csrftoken",
    "x-request-id",
)
CORS_EXPOSE_HEADERS = ("idempotent-replayed", "retry-after", "x-request-id")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
SECURE_CSP = {
    "default-src": ["'self'"],
    "script-src": ["'self'", "'unsafe-inline'"],
    "style-src": ["'self'", "'unsafe-inline'"],
    "img-src": ["'self'", "data:"],
    "connect-src": ["'self'", "ws:", "wss:"],
    "frame-ancestors": ["'none'"],
}
if PRODUCTION:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
    SECURE_REDIRECT_EXEMPT = [r"^health/", r"^metrics$"]
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000, minimum=0)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True

# --- REST framework ----------------------------------------------------------------------------

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # Token first: its WWW-Authenticate header makes unauthenticated calls 401, not 403.
        "api.authentication.TokenAuthentication",
        "api.authentication.BearerTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["api.renderers.OrjsonRenderer"],
    "DEFAULT_PARSER_CLASSES": ["api.parsers.BoundedJSONParser"],
    "DEFAULT_FILTER_BACKENDS": [
        "api.filters.QueryFilterBackend",
        "api.filters.StableOrderingFilter",
    ],
    # RATE_LIMIT per authenticated user (per address for anonymous requests: api.limits).
    "DEFAULT_THROTTLE_CLASSES": ["api.limits.UserRateThrottle"],
    "DEFAULT_PAGINATION_CLASS": "api.pagination.StandardPagination",
    "PAGE_SIZE": 50,
    "EXCEPTION_HANDLER": "api.exceptions.problem_exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "COERCE_DECIMAL_TO_STRING": True,
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}
if DEBUG:
    REST_FRAMEWORK["DEFAULT_RENDERER_CLASSES"].append(
        "rest_framework.renderers.BrowsableAPIRenderer"
    )

SPECTACULAR_SETTINGS = {
    "TITLE": "Trading Demo API",
    "DESCRIPTION": (
        "Autonomous AI trading agents under governance: orders are metered against quotas, "
        "large orders wait for a human operator's approval, and errors are RFC 7807 problems."
    ),
    "VERSION": APP_VERSION,
    "SERVE_INCLUDE_SCHEMA": False,
    # Swagger UI and ReDoc are served from the installed drf-spectacular-sidecar package: the
    # Content-Security-Policy allows scripts from 'self' only, and the docs work offline.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "SCHEMA_PATH_PREFIX": r"/api/v1",
    # Several models have a `status`: name each enum after its model so the schema is stable
    # (and drf-spectacular's collision warning does not fail `check --deploy`).
    "ENUM_NAME_OVERRIDES": {
        "AgentStatusEnum": "agents.choices.AgentStatus",
        "TradeStatusEnum": "trades.choices.TradeStatus",
        "ApprovalRequestStatusEnum": "oversight.choices.RequestStatus",
    },
    # Declares the problem+json error answers of every operation (api.schema).
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "api.schema.add_service_endpoints",
        "api.schema.add_problem_responses",
    ],
}

RATE_LIMIT = env_str("RATE_LIMIT", "100/15m")
RATE_LIMIT_COUNT, RATE_LIMIT_PERIOD_SECONDS = parse_rate(RATE_LIMIT)
RATE_LIMIT_ENABLED = env_bool("RATE_LIMIT_ENABLED", True)
# Order submissions per user (API token or session), on top of the per-IP limit.
TRADE_RATE_LIMIT = env_str("TRADE_RATE_LIMIT", "600/m")
parse_rate(TRADE_RATE_LIMIT)  # fail at startup on a malformed rate
RATELIMIT_USE_CACHE = "default"
# Behind a reverse proxy every client arrives from the proxy's address: name the request
# header that carries the client's address (e.g. HTTP_X_FORWARDED_FOR) so the per-IP limit
# counts clients, not the proxy. Only set it when the proxy overwrites that header.
RATE_LIMIT_IP_HEADER = env_str("RATE_LIMIT_IP_HEADER")
RATELIMIT_IP_META_KEY = "api.limits.client_ip"
# A cache that cannot count (Redis down) lets requests through: availability first.
RATELIMIT_FAIL_OPEN = True

# --- gRPC services -----------------------------------------------------------------------------

METERING_GRPC_ADDRESS = env_str("METERING_GRPC_ADDRESS", "localhost:50051")
OVERSIGHT_GRPC_ADDRESS = env_str("OVERSIGHT_GRPC_ADDRESS", "localhost:50052")
EMBEDDED_SERVICES = env_bool("EMBEDDED_SERVICES", not PRODUCTION)
# `serve --seed-demo-if-empty` (make run) starts `run_agents` for the seeded demo agents once
# it listens, so the demo trades by itself; DEMO_AGENTS=false leaves them idle.
DEMO_AGENTS = env_bool("DEMO_AGENTS", True)
GRPC_TIMEOUT_SECONDS = env_float("GRPC_TIMEOUT_SECONDS", 2.0)
# At most this many gRPC calls of one process in flight at once (0: no limit); one more waits
# up to GRPC_CALL_SLOT_WAIT_SECONDS for a slot, then answers 503 instead of holding a request
# thread. gunicorn (config/gunicorn.conf.py) sets it to one less than its threads, so a slow
# service never holds them all and liveness and reads keep answering, while a busy process
# with healthy services queues its calls instead of refusing orders
# (grpc_clients._channel.CallSlots).
GRPC_MAX_CALLS_IN_FLIGHT = env_int("GRPC_MAX_CALLS_IN_FLIGHT", 0, minimum=0)
GRPC_CALL_SLOT_WAIT_SECONDS = env_float("GRPC_CALL_SLOT_WAIT_SECONDS", 0.25)
# Tell the reference metering service each agent's daily_trade_limit (its private quota_limit
# convention), so that its own trade_executions quota matches. Only a hint: the server counts
# daily_trade_limit itself (trades.services.daily_trade_count).
METERING_QUOTA_HINTS = env_bool("METERING_QUOTA_HINTS", True)
GRPC_CALL_HOOK = "observability.metrics.observe_grpc_call"
GRPC_REQUEST_ID_PROVIDER = "observability.request_context.current_request_id"

# --- trading domain ----------------------------------------------------------------------------

MARKET_SYMBOLS = [s.upper() for s in env_list("MARKET_SYMBOLS", "AAPL,GOOGL,MSFT,AMZN,TSLA")]
MARKET_TICK_MS = env_int("MARKET_TICK_MS", 1000, minimum=10)
MARKET_SEED = env_int("MARKET_SEED", 42)
# Length of one simulated trading day; `day` orders expire when it ends.
MARKET_DAY_SECONDS = env_int("MARKET_DAY_SECONDS", 86400, minimum=1)
# Operator-set ceilings of the agents' governance limits (SPEC §5, "Who may set a limit"). They
# are also the defaults of a new agent. An owner may set a limit at or below its ceiling (or
# lower it from wherever it is); only an operator may set it above. Each must stay within the
# limit's own range (agents.services.agent_config_normalize).
AGENT_LIMIT_CEILINGS = {
    "auto_approval_limit": env_decimal("AGENT_CEILING_AUTO_APPROVAL_LIMIT", "10000"),
    "approval_budget_fraction": env_decimal("AGENT_CEILING_APPROVAL_BUDGET_FRACTION", "0.25"),
    "max_position_fraction": env_decimal("AGENT_CEILING_MAX_POSITION_FRACTION", "0.3"),
    "daily_trade_limit": env_int("AGENT_CEILING_DAILY_TRADE_LIMIT", 100, minimum=1),
}
if not (
    0 <= AGENT_LIMIT_CEILINGS["auto_approval_limit"] <= 10**9
    and 0 < AGENT_LIMIT_CEILINGS["approval_budget_fraction"] <= 1
    and 0 < AGENT_LIMIT_CEILINGS["max_position_fraction"] <= 1
    and AGENT_LIMIT_CEILINGS["daily_trade_limit"] <= 1_000_000
):
    raise ImproperlyConfigured(
        "AGENT_CEILING_*: auto_approval_limit must be 0-1000000000, the fractions in (0, 1] "
        f"and daily_trade_limit 1-1000000; got {AGENT_LIMIT_CEILINGS}"
    )
OVERSIGHT_APPROVAL_TTL = env_int("OVERSIGHT_APPROVAL_TTL", 24 * 3600, minimum=1)
OUTBOX_DELIVERY_INTERVAL_MS = env_int("OUTBOX_DELIVERY_INTERVAL_MS", 1000, minimum=10)
# How often each serving process checks the idle connections of its PostgreSQL pool.
DATABASE_POOL_CHECK_INTERVAL = env_float("DATABASE_POOL_CHECK_INTERVAL", 30.0)
WS_IDLE_TIMEOUT_SECONDS = env_int("WS_IDLE_TIMEOUT_SECONDS", 120, minimum=1)
WS_EVENT_BUFFER_SIZE = env_int("WS_EVENT_BUFFER_SIZE", 1000, minimum=1)
WS_MAX_MESSAGES_PER_SECOND = env_int("WS_MAX_MESSAGES_PER_SECOND", 20, minimum=1)
# Leader election of the singleton jobs (runtime.leader): heartbeat period, and how long a
# leader that cannot renew keeps running them (also the Redis key's expiry).
LEADER_RENEW_SECONDS = env_float("LEADER_RENEW_SECONDS", 2.0)
LEADER_LEASE_SECONDS = env_float("LEADER_LEASE_SECONDS", 10.0)

# --- logging -----------------------------------------------------------------------------------

LOG_LEVEL = env_str("LOG_LEVEL", "INFO").upper()
LOG_FORMAT = env_str("LOG_FORMAT", "json" if PRODUCTION else "text")
# Tracebacks in the log output: with DEBUG only, unless asked for. Without them a failure is
# logged as one line naming its exception (observability.log_redaction.TracebackFilter).
LOG_TRACEBACKS = env_bool("LOG_TRACEBACKS", DEBUG)
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        "request_context": {"()": "observability.request_context.RequestContextFilter"},
        # Masks ?token=, passwords and Authorization values; the request becomes its path.
        "redact_secrets": {"()": "observability.log_redaction.RedactSecretsFilter"},
        "tracebacks": {
            "()": "observability.log_redaction.TracebackFilter",
            "tracebacks": LOG_TRACEBACKS,
        },
    },
    "formatters": {
        "json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": "%(asctime)s %(levelname)s %(name)s %(message)s %(request_id)s",
            "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
        },
        "text": {"format": "%(asctime)s %(levelname)-7s %(name)s [%(request_id)s] %(message)s"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "stream": sys.stderr,
            "formatter": LOG_FORMAT if LOG_FORMAT in {"json", "text"} else "text",
            "filters": ["request_context", "tracebacks", "redact_secrets"],
        }
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.server": {"level": "WARNING"},
        # The access log (observability.middleware) has one line per request, 4xx included; Django's
        # own "Bad Request"/"Not Found" warnings would be a second line for the same request.
        # Server errors are still logged here (with their traceback when LOG_TRACEBACKS is on).
        "django.request": {"level": "ERROR"},
        # drf-problems logs every unexpected exception itself; api.exceptions logs once.
        "drf_problems": {"level": "CRITICAL"},
        "daphne": {"level": "WARNING"},
        # uvicorn (the production WebSocket server) logs each handshake at INFO with its query
        # string; its records go through the console handler (secrets masked), warnings only.
        "uvicorn": {"handlers": ["console"], "level": "WARNING", "propagate": False},
        "uvicorn.error": {"level": "WARNING"},
        "uvicorn.access": {"handlers": ["console"], "level": "WARNING", "propagate": False},
    },
}
