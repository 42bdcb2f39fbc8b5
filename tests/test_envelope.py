import logging
import re
from pathlib import Path

import pytest
from django.urls import path
from rest_framework.views import APIView


class Boom(APIView):
    authentication_classes: list = []
    permission_classes: list = []

    def get(self, request):
        raise RuntimeError("secret internal detail")


urlpatterns = [path("api/boom", Boom.as_view())]


@pytest.mark.parametrize("debug", [True, False], ids=["DEBUG=true", "DEBUG=false"])
@pytest.mark.parametrize("path", ["/api/", "/api/no-such-thing", "/api/chat/x/y/z", "/api"])
def test_unknown_api_path_gets_the_error_envelope_in_every_mode(client, db, settings, debug, path):
    settings.DEBUG = debug

    response = client.get(path)

    assert response.status_code == 404
    assert response["Content-Type"].startswith("application/json")
    assert response.json() == {
        "status": "error",
        "error": {"code": "not_found", "message": "Not found.", "details": None},
    }


def test_every_address_make_run_prints_answers(client, db):
    makefile = (Path(__file__).resolve().parent.parent / "Makefile").read_text()
    run_target = makefile.split("\nrun:", 1)[1].split("\n\n", 1)[0]
    paths = set(re.findall(r"""http://\$\(HOST\):\$\(PORT\)(/[^\s)'"\\]*)""", run_target))

    assert "/api/docs" in paths
    for address in sorted(paths):
        # POST-only endpoints answer a GET with 405: the address exists
        assert client.get(address).status_code in (200, 302, 405), address


@pytest.mark.parametrize("debug", [True, False], ids=["DEBUG=true", "DEBUG=false"])
@pytest.mark.parametrize(
    ("path", "status"),
    [("/api/chat", 401), ("/api/no-such-thing", 404), ("/api/chat/not-a-uuid", 401)],
)
def test_a_4xx_is_logged_once_at_warning(client, db, settings, caplog, debug, path, status):
    settings.DEBUG = debug
    caplog.set_level(logging.DEBUG)

    response = client.get(path)

    assert response.status_code == status
    records = [r for r in caplog.records if path in r.getMessage()]
    assert [(r.name, r.levelname) for r in records] == [("django.request", "WARNING")]
    # ...and written by exactly one of the configured handlers (not by Django's DEBUG-only
    # console handler on the "django" logger as well as by ours on the root logger).
    [record] = records
    assert len(_writing_handlers(record)) == 1


def _writing_handlers(record) -> list[logging.Handler]:
    """The configured handlers a record reaches (pytest's capture handlers left out)."""
    found, logger = [], logging.getLogger(record.name)
    while logger is not None:
        for handler in logger.handlers:
            if type(handler).__module__.startswith("_pytest."):
                continue
            if record.levelno >= handler.level and handler.filter(record):
                found.append(handler)
        logger = logger.parent if logger.propagate else None
    return found


def test_oversize_body_gets_413_in_the_envelope(client, db, settings):
    body = "x" * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 1)
    response = client.post("/api/auth/token", data=body, content_type="application/json")
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"


def test_malformed_json_is_400_parse_error(client, db):
    response = client.post("/api/auth/token", data="{oops", content_type="application/json")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "parse_error"


@pytest.mark.urls("tests.test_envelope")
def test_unexpected_exception_is_500_with_a_generic_message(client, db, caplog):
    response = client.get("/api/boom")
    assert response.status_code == 500
    body = response.json()
    assert body == {
        "status": "error",
        "error": {
            "code": "internal_error",
            "message": "An unexpected error occurred.",
            "details": None,
        },
    }
    assert "secret internal detail" not in response.content.decode()
    assert "secret internal detail" in caplog.text  # details only in the log
