import pytest
from django.urls import path
from rest_framework.views import APIView


class Boom(APIView):
    authentication_classes: list = []
    permission_classes: list = []

    def get(self, request):
        raise RuntimeError("secret internal detail")


urlpatterns = [path("api/boom", Boom.as_view())]


def test_unknown_api_path_gets_the_error_envelope(client, db):
    response = client.get("/api/no-such-thing")
    assert response.status_code == 404
    assert response["Content-Type"].startswith("application/json")
    assert response.json() == {
        "status": "error",
        "error": {"code": "not_found", "message": "Not found.", "details": None},
    }


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
