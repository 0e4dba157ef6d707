"""Both servers' APIs against their own OpenAPI schema, by schemathesis: every check it has.

Excluded, one by one, with the reason:

- ``positive_data_acceptance`` on the routes that take an image (``POST /api/predict``,
  ``POST /api/learn/{key}/follow``): a body can be a valid image by the schema and still hold no
  digit (a blank 1x1 PNG); the API refuses it with a documented 422 by design.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed")
schemathesis = pytest.importorskip(
    "schemathesis", reason="schemathesis (the dev extra) is not installed"
)
from hypothesis import HealthCheck, settings  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "fuzz"))
from targets import _client  # noqa: E402  (a server with a small net and one learning session)

APP, SESSION = _client()
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)
IMAGE_ROUTES = {("POST", "/api/predict"), ("POST", "/api/learn/{key}/follow")}
CASES: dict[str, int] = {}


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_the_api_keeps_to_its_schema(case):
    if "key" in (case.path_parameters or {}) and case.path_parameters["key"] != "nosuch":
        case.path_parameters["key"] = SESSION  # a live session, so that its routes run
    excluded = ()
    if (case.method.upper(), case.path) in IMAGE_ROUTES:
        from schemathesis.specs.openapi.checks import positive_data_acceptance

        excluded = (positive_data_acceptance,)
    case.call_and_validate(excluded_checks=excluded)
    key = case.operation.label  # the documented operation, whatever method a case tries
    CASES[key] = CASES.get(key, 0) + 1
    print(f"schemathesis: {len(CASES)} operations, {sum(CASES.values())} cases so far")
