"""Fixtures for the sandbox tests: fast options and a python-quickbooks client."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from qbo_events.sandbox import Sandbox, SandboxOptions
from sandbox_helpers import fast_options


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def options() -> Callable[..., SandboxOptions]:
    return fast_options


@pytest.fixture
def quickbooks_client(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Any]]:
    """Builds a python-quickbooks client (blocking; call it in a thread) pointed at a sandbox.

    Only URLs change: Intuit's AuthClient takes a discovery URL as its `environment`, and the
    QuickBooks client's `api_url_v3`. requests-oauthlib refuses plain http unless told.
    """
    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")

    def build(sandbox: Sandbox, realm_id: str | None = None) -> Any:
        from intuitlib.client import AuthClient
        from quickbooks import QuickBooks

        realm = realm_id or sandbox.options.realm_ids[0]
        auth = AuthClient(
            sandbox.options.client_id,
            sandbox.options.client_secret,
            "http://localhost/callback",
            sandbox.discovery_url,
        )
        client = QuickBooks(
            auth_client=auth,
            refresh_token=sandbox.refresh_token(realm),
            company_id=realm,
            minorversion=75,
        )
        client.api_url_v3 = sandbox.base_url + "/v3"
        return client

    yield build
