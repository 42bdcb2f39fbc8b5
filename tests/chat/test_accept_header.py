"""The message endpoint streams whatever the client's Accept header says (SSE clients send
`Accept: text/event-stream`), and errors decided before the first byte stay JSON envelopes
with their status, also for a client that asked for text/event-stream."""

import pytest

from tests.chat.sse_client import parse_events, streamed_body

ACCEPT_HEADERS = [
    "text/event-stream",
    "application/json",
    "*/*",
    None,
    "text/event-stream;q=1.0, application/json;q=0.5",
    "application/json;q=0.2, text/event-stream;q=0.9, */*;q=0.1",
    "text/html, application/xhtml+xml, application/xml;q=0.9, */*;q=0.8",
]


# The reply's run works on its own thread, so what the test creates must be committed.
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("offline_model")]


def post_message(client, chat_id, accept, message="hello there"):
    headers = {} if accept is None else {"HTTP_ACCEPT": accept}
    return client.post(
        f"/api/chat/{chat_id}/message", {"message": message}, format="json", **headers
    )


@pytest.mark.parametrize("accept", ACCEPT_HEADERS)
def test_the_reply_streams_for_any_accept_header(auth_client, chat, accept):
    response = post_message(auth_client, chat.pk, accept)

    assert response.status_code == 200
    assert response["Content-Type"] == "text/event-stream"
    events = parse_events(streamed_body(response))
    assert events[-1]["done"] is True and "error" not in events[-1]


@pytest.mark.parametrize("accept", ["text/event-stream", "text/event-stream;q=0.5, */*;q=0.1"])
def test_errors_before_the_stream_are_json_envelopes_for_an_sse_client(
    auth_client, chat, settings, accept
):
    not_found = post_message(auth_client, "00000000-0000-0000-0000-000000000000", accept)
    invalid = post_message(auth_client, chat.pk, accept, message="   ")
    settings.MESSAGE_RATE_LIMIT_MS = 60_000
    first = post_message(auth_client, chat.pk, accept)
    assert first.status_code == 200
    streamed_body(first)  # its reply has ended: the next refusal is the rate limit's
    limited = post_message(auth_client, chat.pk, accept)

    for response, status, code in [
        (not_found, 404, "chat_not_found"),
        (invalid, 400, "validation_error"),
        (limited, 429, "rate_limited"),
    ]:
        assert response.status_code == status
        assert response["Content-Type"].startswith("application/json")
        assert response.json()["status"] == "error"
        assert response.json()["error"]["code"] == code
    assert limited["Retry-After"]


def test_the_schema_declares_the_stream_and_json_errors(client, db):
    schema = client.get("/api/schema", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    responses = schema["paths"]["/api/chat/{chat_id}/message"]["post"]["responses"]

    assert list(responses["200"]["content"]) == ["text/event-stream"]
    for status in ("400", "403", "404", "429", "502", "503", "504"):
        assert list(responses[status]["content"]) == ["application/json"]


@pytest.mark.parametrize(
    "path", ["/api/chat", "/api/chat/{chat}", "/api/user/me", "/api/user/token-usage"]
)
def test_a_json_endpoint_answers_json_to_a_client_that_accepts_only_event_streams(
    auth_client, chat, path
):
    """httpx-sse's connect_sse writes `Accept: text/event-stream` into the headers dict it is
    given, so a client that reuses that dict asks every endpoint for an event stream. The API
    speaks JSON: it disregards an Accept it cannot meet (RFC 9110 allows it) rather than 406."""
    response = auth_client.get(path.format(chat=chat.pk), HTTP_ACCEPT="text/event-stream")

    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert response.json()["status"] == "success"


def test_the_schema_still_negotiates_its_format(client):
    as_json = client.get("/api/schema", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    as_yaml = client.get("/api/schema", HTTP_ACCEPT="application/vnd.oai.openapi")

    assert as_json["Content-Type"].startswith("application/vnd.oai.openapi+json")
    assert as_yaml["Content-Type"].startswith("application/vnd.oai.openapi")
    assert as_json.json()["openapi"].startswith("3.")
