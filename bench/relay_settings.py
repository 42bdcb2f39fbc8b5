"""The baseline for the benchmark: a bare Django project that relays the same upstream (the
same provider, the same SSE bytes) with no auth, no database and no billing, served by the
same gunicorn settings. DJANGO_SETTINGS_MODULE=bench.relay_settings."""

from config.settings import *  # noqa: F403 - the same provider settings

INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth", "accounts"]
MIDDLEWARE: list = []
ROOT_URLCONF = "bench.relay_urls"
DATABASES: dict = {}
