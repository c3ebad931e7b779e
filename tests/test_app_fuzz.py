"""Property test of the API from its own OpenAPI schema (schemathesis + hypothesis), with every check
schemathesis has: whatever the input, valid or not, the API running as a real uvicorn process on a
real primary + 2 replicas answers without a 5xx, with a documented status, content type, headers and
body; accepts what the schema allows and refuses what it does not; and enforces its token.  Bounded:
about 40 examples per operation, ~30 s in all.  The same as `schemathesis run --checks all` against
the running API (its module docstring says how)."""
from __future__ import annotations

import pytest
import schemathesis
import schemathesis.checks
from hypothesis import HealthCheck, given, settings

from app_fixtures import api_process, auth

pytestmark = [pytest.mark.integration, pytest.mark.app]


@pytest.fixture(scope="module")
def api_url(app_home, tmp_path_factory):
    import lab

    cluster = lab.up(replicas=2, home=app_home, quiet=True)
    with api_process(cluster, tmp_path_factory.mktemp("api")) as url:
        yield url


@pytest.fixture(scope="module")
def api_schema(api_url):
    return schemathesis.openapi.from_url(f"{api_url}/openapi.json")


SETTINGS = settings(max_examples=40, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


def operations(schema) -> list:
    return [r.ok() for r in schema.get_all_operations()]


def all_checks() -> list:
    """Every check schemathesis registers (what ``--checks all`` runs)."""
    checks = schemathesis.checks.CHECKS.get_all()
    assert len(checks) >= 10 and "positive_data_acceptance" in {c.__name__ for c in checks}
    return checks


def check(case) -> None:
    headers = auth() if case.method == "POST" else None  # with the token, bodies get past the door
    response = case.call(headers=headers, timeout=30)
    assert response.status_code < 500, (
        f"{case.method} {case.formatted_path} {case.query or ''} -> {response.status_code}: {response.text[:300]}")
    case.validate_response(response, checks=all_checks(), headers=headers)
    if response.status_code == 200 and case.method == "GET" and case.path != "/cluster":
        assert response.headers.get("x-served-by"), "every read says which node served it"
        assert response.headers.get("x-replica-lag-ms")


def test_the_schema_has_every_operation(api_schema):
    got = {f"{op.method.upper()} {op.path}" for op in operations(api_schema)}
    assert got == {"GET /health", "GET /coins", "GET /prices/{symbol}", "GET /candles/{symbol}",
                   "GET /market/summary", "POST /ticks", "GET /cluster"}


@pytest.mark.parametrize("operation", ["GET /health", "GET /coins", "GET /prices/{symbol}", "GET /candles/{symbol}",
                                       "GET /market/summary", "POST /ticks", "GET /cluster"])
def test_no_input_gets_a_5xx(api_schema, operation):
    """Schema-conforming and non-conforming inputs alike (schemathesis' positive and negative modes)."""
    method, path = operation.split()
    op = api_schema[path][method]

    @SETTINGS
    @given(case=op.as_strategy())
    def positive(case):
        check(case)

    positive()
    if operation in ("GET /health", "GET /cluster"):
        return  # no inputs: nothing to get wrong
    negative_strategy = op.as_strategy(generation_mode=schemathesis.GenerationMode.NEGATIVE)

    @SETTINGS
    @given(case=negative_strategy)
    def negative(case):
        check(case)

    negative()
