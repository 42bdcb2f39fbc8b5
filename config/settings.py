"""Settings, read from the environment (12-factor) with defaults that run out of the box.

Every variable here is listed in docs/configuration.md's table and in .env.example
(tests/test_configuration_docs.py checks both).
"""

import base64
from datetime import timedelta
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

# --- core -------------------------------------------------------------------
DEBUG = env.bool("DEBUG", default=True)
# The development default is only usable with DEBUG on; production must set its own.
SECRET_KEY = env.str("SECRET_KEY", default="django-insecure-development-only-key-change-me")
if not DEBUG and SECRET_KEY.startswith("django-insecure-"):
    raise ImproperlyConfigured("Set SECRET_KEY in the environment when DEBUG is false.")
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework_simplejwt.token_blacklist",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "axes",
    "accounts",
    "billing",
    "chat",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "config.api.ApiErrorMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last: turns an admin login refused by django-axes into its lock-out page (429).
    "axes.middleware.AxesMiddleware",
    # No GZipMiddleware: it buffers StreamingHttpResponse and holds SSE events back.
]

ROOT_URLCONF = "config.urls"
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
            ],
        },
    },
]

# --- database ---------------------------------------------------------------
DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # Django's psycopg pool: a stream gives its connection back before it waits on the
    # model (chat service), so many open streams share few PostgreSQL connections.
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": env.int("DB_POOL_MIN_SIZE", default=2),
        "max_size": env.int("DB_POOL_MAX_SIZE", default=20),
        # How long a request may wait for a pooled connection before a 503: a burst larger
        # than the node sets up in this time waits in the pool's FIFO queue until then.
        "timeout": env.float("DB_POOL_TIMEOUT", default=30.0),
    }
    # The pool checks a connection when it hands it out, so after a PostgreSQL restart the
    # service recovers by itself instead of failing on stale ones; config.postgresql makes
    # that check free (no round trip) unless the idle connection's socket is readable.
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
    DATABASES["default"]["ENGINE"] = "config.postgresql"
else:
    # SQLite (development, `make run` with several workers, the SQLite test run): a reply's
    # run writes from its own greenlet or thread while requests read, so WAL (readers and
    # the writer do not block each other) and IMMEDIATE transactions (a writer waits for
    # the lock up to `timeout` instead of failing when a read transaction upgrades).
    sqlite_options = DATABASES["default"].setdefault("OPTIONS", {})
    sqlite_options.setdefault("timeout", 20)
    sqlite_options.setdefault("init_command", "PRAGMA journal_mode=WAL;")
    sqlite_options.setdefault("transaction_mode", "IMMEDIATE")
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
# Never ATOMIC_REQUESTS: a streaming generator runs after the view returns.
DATABASES["default"]["ATOMIC_REQUESTS"] = False

# --- cache ------------------------------------------------------------------
CACHES = {"default": env.cache("CACHE_URL", default="locmemcache://")}
# With a Redis CACHE_URL: Redis connections per process and the wait for a free one, for the
# cache and (twice the size) the reply event log (chat/reply/eventlog.py).
REDIS_POOL_MAX_SIZE = env.int("REDIS_POOL_MAX_SIZE", default=50)
REDIS_POOL_TIMEOUT_S = env.float("REDIS_POOL_TIMEOUT_S", default=10.0)
CACHES["default"].setdefault("OPTIONS", {})
if CACHES["default"]["BACKEND"] == "django.core.cache.backends.redis.RedisCache":
    # One Redis connection pool per process, not per request (config/cache.py); a request
    # that finds every connection busy waits for one (up to REDIS_POOL_TIMEOUT_S) instead of
    # failing: redis-py's own pool raises past 100 connections, which a burst of streams on
    # one gevent worker reaches (docs/operations.md).
    CACHES["default"]["BACKEND"] = "config.cache.SharedRedisCache"
    CACHES["default"]["OPTIONS"].setdefault("pool_class", "redis.BlockingConnectionPool")
    CACHES["default"]["OPTIONS"].setdefault("max_connections", REDIS_POOL_MAX_SIZE)
    CACHES["default"]["OPTIONS"].setdefault("timeout", REDIS_POOL_TIMEOUT_S)
if CACHES["default"]["BACKEND"] == "django.core.cache.backends.locmem.LocMemCache":
    CACHES["default"]["OPTIONS"].setdefault(
        "MAX_ENTRIES", env.int("TOKEN_CACHE_MAX_ENTRIES", 10000)
    )
# Token counts kept in each process in front of CACHES (an LRU; 0 turns it off).
TOKEN_CACHE_LOCAL_ENTRIES = env.int("TOKEN_CACHE_LOCAL_ENTRIES", default=2048)

# --- auth -------------------------------------------------------------------
AUTH_USER_MODEL = "accounts.User"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# The client's address for throttles and lock-outs (config/client_ip.py): 0 = the socket
# peer, X-Forwarded-For ignored; N = the address N trusted proxies in front report.
TRUSTED_PROXY_COUNT = env.int("TRUSTED_PROXY_COUNT", default=0)

# Failed logins (django-axes, recorded in the database so every node agrees): a lock-out
# after LOGIN_FAILURE_LIMIT failures for one account, or from one address, within
# LOGIN_LOCKOUT_MINUTES of the last one; it lasts LOGIN_LOCKOUT_MINUTES. Guards the admin's
# login form and the API's /api/auth/token (429 login_locked) alike; docs/operations.md
# says how to unlock an account early.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",  # first: refuses a locked-out login early
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env.int("LOGIN_FAILURE_LIMIT", default=10)
AXES_COOLOFF_TIME = timedelta(minutes=env.int("LOGIN_LOCKOUT_MINUTES", default=15))
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]  # either one reaching the limit locks
AXES_CLIENT_IP_CALLABLE = "config.client_ip.client_ip"
AXES_USERNAME_CALLABLE = "accounts.lockout.login_username"
# A success does not wipe the address's failures (it would also wipe the failures that
# address made against other accounts); they age out with the cool-off.
AXES_RESET_ON_SUCCESS = False
# Attempts during a lock-out do not extend it, so nobody can keep an account locked for good
# with one try every few minutes; the lock-out ends LOGIN_LOCKOUT_MINUTES after it began.
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False
AXES_DISABLE_ACCESS_LOG = True  # failures only; successful logins are not logged to a table
AXES_LOCKOUT_TEMPLATE = "admin/login_locked.html"

SIMPLE_JWT = {
    "ACCESS_TOKEN_LIFETIME": timedelta(minutes=env.int("JWT_ACCESS_MINUTES", default=15)),
    "REFRESH_TOKEN_LIFETIME": timedelta(days=env.int("JWT_REFRESH_DAYS", default=7)),
    "ROTATE_REFRESH_TOKENS": True,
    "BLACKLIST_AFTER_ROTATION": True,
    "UPDATE_LAST_LOGIN": False,
    "ALGORITHM": "HS256",
    "SIGNING_KEY": env.str("JWT_SIGNING_KEY", default="") or SECRET_KEY,
    "AUTH_HEADER_TYPES": ("Bearer",),
}

# --- REST framework and OpenAPI ---------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework_simplejwt.authentication.JWTAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_CONTENT_NEGOTIATION_CLASS": "config.negotiation.AnyAcceptNegotiation",
    "DEFAULT_PARSER_CLASSES": ["config.parsers.JSONParser"],
    "DEFAULT_PAGINATION_CLASS": "config.api.EnvelopePagination",
    "PAGE_SIZE": 20,
    "EXCEPTION_HANDLER": "config.api.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_THROTTLE_RATES": {
        "login": env.str("LOGIN_THROTTLE_RATE", default="10/min"),
        "register": env.str("REGISTER_THROTTLE_RATE", default="20/hour"),
    },
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
    # The throttles' client address, as config/client_ip.py finds it: None (DRF's default)
    # would trust X-Forwarded-For as sent by the client. 1 behind config/nginx.conf.
    "NUM_PROXIES": TRUSTED_PROXY_COUNT,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Gemini chat and token billing API",
    "DESCRIPTION": (
        "Chat with Google Gemini over REST and Server-Sent Events; every token is metered "
        "against a monthly per-user budget. Every response uses one envelope: "
        '{"status": "success", "data": ...} or {"status": "error", "error": {"code", "message", '
        '"details"}}.'
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    # /api and the OpenAI-compatible /v1 (tags and operation ids skip the prefix).
    "SCHEMA_PATH_PREFIX": r"/(api|v1)",
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "ENUM_NAME_OVERRIDES": {
        "EnvelopeSuccessStatus": ["success"],
        "EnvelopeErrorStatus": ["error"],
        "MessageStatus": "chat.models.Message.Status",
        "MessageRole": "chat.models.Message.Role",
        # the /v1 API's roles (chat/openai_api/schema.py)
        "ChatCompletionRole": ["system", "developer", "user", "assistant"],
        "AssistantRole": ["assistant"],
    },
}

# --- i18n, static -------------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
# Where `collectstatic` writes and whitenoise serves from when DEBUG is false.
STATIC_ROOT = Path(env.str("STATIC_ROOT", default=str(BASE_DIR / "staticfiles")))
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG
            else "whitenoise.storage.CompressedManifestStaticFilesStorage"
        )
    },
}
WHITENOISE_USE_FINDERS = DEBUG

# Requests larger than this get 413 (the longest message is 5000 characters).
DATA_UPLOAD_MAX_MEMORY_SIZE = env.int("DATA_UPLOAD_MAX_MEMORY_SIZE", default=256 * 1024)
# A request body must arrive whole within this many seconds, or the request ends with 408
# and its connection slot is freed (config/request_body.py); 0 turns the deadline off.
REQUEST_BODY_TIMEOUT_S = env.float("REQUEST_BODY_TIMEOUT_S", default=5.0)

# --- security (production: DEBUG=false) ----------------------------------------
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
if not DEBUG:
    SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
    SECURE_REDIRECT_EXEMPT = [r"^health$"]
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True

# --- the product ----------------------------------------------------------------
LLM_PROVIDER = env.str("LLM_PROVIDER", default="auto")  # auto | gemini | local
GEMINI_API_KEY = env.str("GEMINI_API_KEY", default="")
GEMINI_MODEL = env.str("GEMINI_MODEL", default="gemini-2.5-flash")
GEMINI_BASE_URL = env.str("GEMINI_BASE_URL", default="")
GEMINI_API_VERSION = env.str("GEMINI_API_VERSION", default="v1beta")
GEMINI_SAFETY_THRESHOLD = env.str("GEMINI_SAFETY_THRESHOLD", default="BLOCK_MEDIUM_AND_ABOVE")
GEMINI_MAX_OUTPUT_TOKENS = env.int("GEMINI_MAX_OUTPUT_TOKENS", default=2048)
# Milliseconds of silence allowed per connect/read (the SDK's unit). It bounds a stalled
# stream and the wait for the first chunk (per attempt), after which the view answers 504.
GEMINI_TIMEOUT_MS = env.int("GEMINI_TIMEOUT_MS", default=30000)
GEMINI_RETRY_ATTEMPTS = env.int("GEMINI_RETRY_ATTEMPTS", default=3)
GEMINI_RETRY_INITIAL_DELAY_S = env.float("GEMINI_RETRY_INITIAL_DELAY_S", default=1.0)
GEMINI_RETRY_MAX_DELAY_S = env.float("GEMINI_RETRY_MAX_DELAY_S", default=8.0)
# Upstream connections a process may hold open at once, one per reply generating. The SDK's
# HTTP client allows 100: a gevent worker holds up to 1000 streams, and the 101st reply
# waited for another to end before it was sent (a burst of 500: first-byte p99 8.9 s).
GEMINI_MAX_CONNECTIONS = env.int("GEMINI_MAX_CONNECTIONS", default=1000)
# The reply's stream: "rest" sends the SDK's request on the SDK's HTTP client and parses
# the SSE itself (docs/decisions/0002); "sdk" goes through generate_content_stream.
GEMINI_STREAM_CLIENT = env.str("GEMINI_STREAM_CLIENT", default="rest")
SSE_KEEPALIVE_S = env.float("SSE_KEEPALIVE_S", default=15.0)
LOCAL_LLM_CHUNK_DELAY_MS = env.int("LOCAL_LLM_CHUNK_DELAY_MS", default=40)
# 0: natural chunks of a few words; N > 0: exactly N chunks (benchmarks).
LOCAL_LLM_CHUNKS = env.int("LOCAL_LLM_CHUNKS", default=0)

SYSTEM_PROMPT_FILE = env.str("SYSTEM_PROMPT_FILE", default="")
SYSTEM_PROMPT = env.str(
    "SYSTEM_PROMPT",
    default=(
        "You are a friendly, knowledgeable assistant for NFTs and digital art. Help people "
        "develop artwork concepts, understand NFT collections, marketplaces and smart-contract "
        "basics, and describe visual styles clearly. Be concise and practical."
    ),
)
if SYSTEM_PROMPT_FILE:
    SYSTEM_PROMPT = Path(SYSTEM_PROMPT_FILE).read_text(encoding="utf-8").strip()

DEFAULT_TOKEN_LIMIT = env.int("DEFAULT_TOKEN_LIMIT", default=100_000)
MAX_CHATS_PER_USER = env.int("MAX_CHATS_PER_USER", default=5)
MESSAGE_RATE_LIMIT_MS = env.int("MESSAGE_RATE_LIMIT_MS", default=1000)
MAX_TOKENS_PER_MESSAGE = env.int("MAX_TOKENS_PER_MESSAGE", default=5000)  # characters
CONTEXT_MESSAGES = env.int("CONTEXT_MESSAGES", default=10)
TOKEN_OVERHEAD = env.int("TOKEN_OVERHEAD", default=10)
# The count-tokens function billing uses (text -> int); billing does not import chat.
TOKEN_COUNTER = "chat.llm.count_tokens"  # noqa: S105 - a dotted path, not a secret
# After the count API failed for the system prompt, use the estimate for this many seconds
# before asking again (per process): a failing count API is not asked on every message.
SYSTEM_PROMPT_COUNT_RETRY_S = env.float("SYSTEM_PROMPT_COUNT_RETRY_S", default=60.0)
# A reservation older than this was left by a killed worker; the sweep releases it.
RESERVATION_TTL_S = env.int("RESERVATION_TTL_S", default=900)

# --- reply runs (chat/reply/; docs/architecture.md "The life of a run") ------------------
# finish: a reply whose client went away is generated to its end and billed (a resume can
# fetch it); cancel: the upstream call is closed when the client that sent the message goes
# away, and no shared event log is written (the behaviour before runs).
REPLY_ON_DISCONNECT = env.str("REPLY_ON_DISCONNECT", default="finish")
if REPLY_ON_DISCONNECT not in ("finish", "cancel"):
    raise ImproperlyConfigured("REPLY_ON_DISCONNECT must be 'finish' or 'cancel'.")
# How long a reply's event log is kept after its end (resumes are then served from the
# saved reply, the rest of its text as one event).
REPLY_LOG_TTL_S = env.int("REPLY_LOG_TTL_S", default=900)
# Each worker writes the events of all its runs to the shared log in one batch this often.
REPLY_LOG_FLUSH_MS = env.int("REPLY_LOG_FLUSH_MS", default=100)
# Database log only: how often a follower on another worker looks for new events.
REPLY_LOG_POLL_MS = env.int("REPLY_LOG_POLL_MS", default=200)
# How often each worker looks for stops requested on another worker or node.
REPLY_STOP_POLL_MS = env.int("REPLY_STOP_POLL_MS", default=300)
# How often each worker saves the text of its runs and their heartbeat (one statement).
REPLY_CHECKPOINT_S = env.float("REPLY_CHECKPOINT_S", default=2.0)
# A run whose heartbeat is older than this is dead (its worker was killed): the sweep
# (`manage.py sweep_runs`) ends it.
REPLY_STALE_S = env.int("REPLY_STALE_S", default=60)
# How long POST .../stop waits for the run to save the stopped reply.
REPLY_STOP_WAIT_S = env.float("REPLY_STOP_WAIT_S", default=10.0)
# --- money: budget alerts and their webhook (docs/budgets.md) ----------------------------
# Percent of a month's limit; crossing one during a settle records an alert once.
try:
    BUDGET_ALERT_THRESHOLDS = sorted(
        {int(p) for p in env.list("BUDGET_ALERT_THRESHOLDS", default=["50", "80", "100"]) if p}
    )
except ValueError:
    BUDGET_ALERT_THRESHOLDS = [0]  # refused just below, with the reason
if any(not 1 <= p <= 100 for p in BUDGET_ALERT_THRESHOLDS):
    raise ImproperlyConfigured(
        "BUDGET_ALERT_THRESHOLDS: whole percents from 1 to 100, e.g. 50,80,100"
    )
ALERT_WEBHOOK_URL = env.str("ALERT_WEBHOOK_URL", default="")
# Standard Webhooks secret, whsec_<base64 of the key>.
ALERT_WEBHOOK_SECRET = env.str("ALERT_WEBHOOK_SECRET", default="")
if ALERT_WEBHOOK_URL:
    if not ALERT_WEBHOOK_URL.startswith(("http://", "https://")):
        raise ImproperlyConfigured("ALERT_WEBHOOK_URL must be an http(s) URL.")
    try:
        if not ALERT_WEBHOOK_SECRET.startswith("whsec_"):
            raise ValueError
        _key = ALERT_WEBHOOK_SECRET.removeprefix("whsec_")
        if not base64.b64decode(_key + "=" * (-len(_key) % 4), validate=True):
            raise ValueError
    except ValueError:
        raise ImproperlyConfigured(
            "ALERT_WEBHOOK_URL needs ALERT_WEBHOOK_SECRET in whsec_<base64> form."
        ) from None
ALERT_WEBHOOK_TIMEOUT_S = env.float("ALERT_WEBHOOK_TIMEOUT_S", default=5.0)
ALERT_WEBHOOK_MAX_ATTEMPTS = env.int("ALERT_WEBHOOK_MAX_ATTEMPTS", default=10)

# --- logging ----------------------------------------------------------------------
LOG_LEVEL = env.str("LOG_LEVEL", default="INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        # Django's default config gives "django" a console handler of its own (DEBUG only)
        # besides propagating to the root: each 4xx/5xx line of django.request was written
        # twice. No handler here: every record is written once, by the root's. Levels stay
        # Django's: 4xx WARNING, 5xx ERROR.
        "django": {"handlers": [], "propagate": True},
        # httpx logs request URLs; keep it quiet so nothing sensitive is echoed.
        "httpx": {"level": "WARNING"},
        "httpcore": {"level": "WARNING"},
        "httpx2": {"level": "WARNING"},
        "google_genai": {"level": "WARNING"},
    },
}
