"""Property-based tests of every operation in our own OpenAPI schema (schemathesis), with a
real JWT: no 5xx, and every response matches the documented schema and status codes."""

import pytest
from hypothesis import HealthCheck, settings
from rest_framework_simplejwt.tokens import AccessToken

schemathesis = pytest.importorskip("schemathesis")

from schemathesis.specs.openapi.checks import positive_data_acceptance  # noqa: E402

from config.wsgi import application  # noqa: E402

schema = schemathesis.openapi.from_wsgi("/api/schema", application)
CASES_RUN: list[str] = []


@pytest.fixture(scope="module", autouse=True)
def _report_case_count():
    yield
    print(f"\nschemathesis: {len(CASES_RUN)} cases over {len(set(CASES_RUN))} operations")


@pytest.fixture
def auth_headers(transactional_db, django_user_model, settings):
    # transactional: the WSGI handler closes connections at the end of each request, as in
    # production, which must not happen inside a test-wide transaction.
    settings.LLM_PROVIDER = "local"
    settings.LOCAL_LLM_CHUNK_DELAY_MS = 0
    settings.MESSAGE_RATE_LIMIT_MS = 0
    user = django_user_model.objects.create_user(
        "fuzz", password="a-long-passphrase-42", is_staff=True
    )
    return {"Authorization": f"Bearer {AccessToken.for_user(user)}"}


@pytest.mark.slow
@schema.parametrize()
@settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
    ],
)
def test_every_operation(case, auth_headers):
    CASES_RUN.append(case.operation.label)
    # Every check but "schema-valid data must be accepted": we reject, by design, strings
    # that are blank after trimming, hold NUL or lone surrogates, and weak passwords, which a
    # plain OpenAPI schema cannot express (each is tested by hand elsewhere).
    case.call_and_validate(headers=auth_headers, excluded_checks=[positive_data_acceptance])
