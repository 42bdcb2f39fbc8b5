"""The registry of error codes (config/errors.py) and what is derived from it: the exception
classes' statuses, the API's code tables, docs/api.md's table, the OpenAPI descriptions and
examples, the one 413 and the one shape of a failed `done` event."""

from pathlib import Path

import pytest
import yaml
from django.core.exceptions import RequestDataTooBig
from django.core.management import call_command
from rest_framework.test import APIRequestFactory

from config import api
from config.api import PayloadTooLarge, ServiceError
from config.errors import ERRORS, HTTP, ErrorCode, http_codes, markdown_table

ROOT = Path(__file__).resolve().parent.parent


def _every_service_error() -> list[type[ServiceError]]:
    from django.apps import apps
    from django.utils.module_loading import autodiscover_modules

    # Every module that defines errors, imported: a class is checked when it is defined.
    autodiscover_modules("exceptions", "views", "services", "selectors")
    assert {app.label for app in apps.get_app_configs()} >= {"accounts", "billing", "chat"}
    found, todo = [], [ServiceError]
    while todo:
        for sub in todo.pop().__subclasses__():
            found.append(sub)
            todo.append(sub)
    return found


def test_every_error_class_has_a_registered_code_and_its_status():
    classes = _every_service_error()
    assert len(classes) > 30
    for cls in classes:
        assert cls.code in ERRORS, cls
        assert cls.status == ERRORS[cls.code].status, cls


def test_a_class_with_an_unregistered_code_or_another_status_cannot_be_defined():
    with pytest.raises(TypeError, match=r"not in config\.errors"):
        type("Made", (ServiceError,), {"code": "made_up"})
    with pytest.raises(TypeError, match="status 418"):
        type("Teapot", (ServiceError,), {"code": ErrorCode.FORBIDDEN, "status": 418})


def test_the_codes_the_handlers_answer_are_registered():
    answered = [code for _, code in api._DRF_CODES]
    answered += [code for code, _ in api._ERROR_CODES.values()]
    answered += list(api._OPENAI_ERRORS)
    assert not [code for code in answered if code not in ERRORS]
    for status, (code, _) in api._ERROR_CODES.items():
        assert ERRORS[code].status == status


def test_the_table_in_docs_api_md_is_the_registry():
    text = (ROOT / "docs" / "api.md").read_text()
    section = text[text.index("## Status and error codes") :]
    start = section.index("| status | code | when |")
    table = section[start : section.index("\n\n", start) + 1]
    assert table == markdown_table(), "regenerate it: python -m config.errors"


def test_the_openapi_schema_lists_and_exemplifies_every_code_of_a_status(tmp_path):
    call_command("spectacular", "--file", str(tmp_path / "schema.yaml"))
    schema = yaml.safe_load((tmp_path / "schema.yaml").read_text())
    register = schema["paths"]["/api/auth/register"]["post"]["responses"]["400"]
    assert "username_taken" in register["description"]
    examples = register["content"]["application/json"]["examples"]
    codes = [example["value"]["error"]["code"] for example in examples.values()]
    assert codes == http_codes(400)
    assert ErrorCode.USERNAME_TAKEN in codes
    for status in (401, 403, 404, 409, 429, 502, 503, 504):
        assert all(ERRORS[code].where == HTTP for code in http_codes(status))


def test_a_body_too_large_has_one_message_wherever_it_is_refused(client, db, settings):
    body = "x" * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 1)
    middleware = client.post("/api/auth/token", data=body, content_type="application/json")
    request = APIRequestFactory().post("/api/auth/token")
    handler = api.exception_handler(RequestDataTooBig(), {"request": request})
    expected = {
        "code": "payload_too_large",
        "message": f"The body is larger than {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes.",
        "details": None,
    }
    assert middleware.status_code == handler.status_code == 413
    assert middleware.json()["error"] == handler.data["error"] == expected
    assert PayloadTooLarge().as_dict() == expected


def test_a_failed_done_event_has_the_contracts_shape():
    from chat.exceptions import StreamFailed
    from chat.reply.events import failed_done

    done = failed_done(reply_id="r", user_message_id="u", error=StreamFailed(), tokens_used=0)
    assert done == {
        "done": True,
        "error": {"code": "internal_error", "message": StreamFailed.default_message},
        "message_id": "r",
        "user_message_id": "u",
        "tokens_used": 0,
    }
