"""Schemathesis hooks for the service fuzz (tests/serve/scenario.py:fuzz), loaded through SCHEMATHESIS_HOOKS.

``service_contract`` replaces Schemathesis' ``not_a_server_error``: 500 (and any 5xx the API does not
document) fails; 503 (at capacity or shutting down, with Retry-After) and 504 (the request's own deadline,
e.g. ``{"timeout_s": 5e-324}``, which Schemathesis found) are the documented answers they are. Every
refusal must be one line of text."""

import schemathesis

DOCUMENTED_5XX = {503: "Retry-After", 504: None}


@schemathesis.check
def service_contract(ctx, response, case):
    status = response.status_code
    if status >= 500 and status not in DOCUMENTED_5XX:
        raise AssertionError(f"server error {status}: {response.text[:300]!r}")
    header = DOCUMENTED_5XX.get(status)
    if header and header not in response.headers:
        raise AssertionError(f"{status} without {header}")
    if status >= 400:
        body = response.text
        if body.count("\n") != 1 or not body.endswith("\n") or "Traceback" in body:
            raise AssertionError(f"{status}: the refusal is not one line: {body[:300]!r}")
