"""`qbo-events authorize` against the sandbox: tokens for another company are never stored."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from harness import SandboxProcess
from qbo_events.outbox import Outbox
from qbo_events.quickbooks.oauth import Tokens

REALM_A = "9341453908128517"
REALM_B = "4620816365176399"
Factory = Callable[..., SandboxProcess]


@pytest.fixture
def sandbox(sandbox_factory: Factory) -> SandboxProcess:
    return sandbox_factory(realms=(REALM_A, REALM_B))


def write_config(tmp_path: Path, sandbox: SandboxProcess, realm: str = REALM_A) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(
        'state_dir = "./state"\n'
        + sandbox.quickbooks_settings()
        + f'[[instances]]\nname = "acme"\nrealm_id = "{realm}"\n'
        'event.vendor.type = "polling"\n'
        'event.notification.callback.url = "https://example.com/hook"\n'
    )
    return path


def authorize(config: Path, code: str, *extra: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k != "QBO_EVENTS_CONFIG"}
    return subprocess.run(
        [
            *(sys.executable, "-m", "qbo_events", "authorize", "--config", str(config)),
            *("--instance", "acme", "--code", code, "--redirect-uri", "https://example.com/cb"),
            *extra,
        ],
        capture_output=True,
        text=True,
        env=environ,
        timeout=60,
    )


def stored_tokens(config: Path) -> Tokens | None:
    path = config.parent / "state" / "outbox.sqlite3"
    if not path.exists():
        return None

    async def read() -> Tokens | None:
        async with Outbox(path) as outbox:
            return await outbox.load_tokens("acme")

    return asyncio.run(read())


def code_for(sandbox: SandboxProcess, realm: str) -> str:
    return str(sandbox.control("POST", "/_sandbox/connect", {"realm_id": realm})["auth_code"])


def test_tokens_for_the_instances_own_company_are_stored(
    tmp_path: Path, sandbox: SandboxProcess
) -> None:
    config = write_config(tmp_path, sandbox)
    result = authorize(config, code_for(sandbox, REALM_A), "--realm-id", REALM_A)
    assert result.returncode == 0, result.stderr
    assert "stored new tokens for acme" in result.stdout
    tokens = stored_tokens(config)
    assert tokens is not None and tokens.refresh_token and tokens.access_token
    # The refresh token stored is one the sandbox holds for realm A.
    assert tokens.refresh_token in sandbox.stats()["refresh_tokens"][REALM_A]


def test_tokens_for_another_company_are_refused_and_not_stored(
    tmp_path: Path, sandbox: SandboxProcess
) -> None:
    config = write_config(tmp_path, sandbox)
    # The operator signed in to company B, and did not pass --realm-id.
    result = authorize(config, code_for(sandbox, REALM_B))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "stored" not in result.stdout
    message = result.stderr.strip()
    assert len(message.splitlines()) == 1, message
    assert message.startswith("qbo-events: ")
    assert "another company" in message and REALM_A in message and "acme" in message
    assert "nothing was stored" in message
    assert stored_tokens(config) is None


def test_a_realm_id_that_is_not_the_instances_is_refused_before_the_code_is_used(
    tmp_path: Path, sandbox: SandboxProcess
) -> None:
    config = write_config(tmp_path, sandbox)
    code = code_for(sandbox, REALM_B)
    result = authorize(config, code, "--realm-id", REALM_B)
    assert result.returncode == 2, result.stderr
    assert "usage:" not in result.stderr
    message = result.stderr.strip()
    assert len(message.splitlines()) == 1, message
    assert REALM_B in message and REALM_A in message and "acme" in message
    assert stored_tokens(config) is None
    # The code was not spent: an instance of company B can still use it.
    (tmp_path / "b").mkdir()
    other = write_config(tmp_path / "b", sandbox, REALM_B)
    result = authorize(other, code, "--realm-id", REALM_B)
    assert result.returncode == 0, result.stderr
    assert stored_tokens(other) is not None


def test_when_quickbooks_cannot_answer_the_realm_id_given_decides(
    tmp_path: Path, sandbox: SandboxProcess
) -> None:
    config = write_config(tmp_path, sandbox)
    # Without the redirect's realmId nothing vouches for the tokens: refused, nothing stored.
    sandbox.faults(errors=1, error_status=503)
    result = authorize(config, code_for(sandbox, REALM_A))
    assert result.returncode == 1, result.stderr
    assert "cannot confirm" in result.stderr and "--realm-id" in result.stderr
    assert stored_tokens(config) is None
    # With it (already compared with the instance's), the tokens are kept, and the doubt said.
    sandbox.faults(errors=1, error_status=503)
    result = authorize(config, code_for(sandbox, REALM_A), "--realm-id", REALM_A)
    assert result.returncode == 0, result.stderr
    assert "stored new tokens for acme" in result.stdout
    assert "could not confirm" in result.stderr and "HTTP 503" in result.stderr
    tokens = stored_tokens(config)
    assert tokens is not None
    assert tokens.refresh_token in sandbox.stats()["refresh_tokens"][REALM_A]
