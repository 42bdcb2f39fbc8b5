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
