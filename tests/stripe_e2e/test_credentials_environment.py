"""Stripe credentials must match the environment: `tillpoint serve` refuses a live key outside
production and a test key in production — exit status 2, one clear line on stderr, and the key
itself nowhere in what it prints. A matching pair passes the same preflight."""

from __future__ import annotations

import secrets
import subprocess
from pathlib import Path

import pytest

from tests.conftest import free_port, settings_for
from tests.support.server import HOST, TILLPOINT, server_env
from tillpoint.bootstrap import preflight
from tillpoint.config import ConfigurationRefused

pytestmark = pytest.mark.slow

# A bound on how long a refusing process may take, not a measurement.
EXIT_TIMEOUT = 120


def live_key(prefix: str = "sk_live_") -> str:
    return f"{prefix}tillpoint{secrets.token_hex(12)}"


def sandbox_key() -> str:
    return f"sk_test_tillpoint{secrets.token_hex(12)}"


def serve(tmp_path: Path, **settings: str) -> subprocess.CompletedProcess[str]:
    """`tillpoint serve` on a free port over a new SQLite database, in an empty directory."""
    workdir = tmp_path / "serve"
    workdir.mkdir()
    url = f"sqlite+aiosqlite:///{workdir / 'tillpoint.db'}"
    unset = [name for name, value in settings.items() if value == ""]
    given = {name: value for name, value in settings.items() if value != ""}
    env = server_env(url, workdir / ".tillpoint", **given)
    for name in unset:
        env.pop(f"TILLPOINT_{name.upper()}", None)
    try:
        return subprocess.run(
            [TILLPOINT, "serve", "--host", HOST, "--port", str(free_port(HOST))],
            env=env,
            cwd=workdir,
            capture_output=True,
            text=True,
            timeout=EXIT_TIMEOUT,
        )
    except subprocess.TimeoutExpired as exc:  # it started: the refusal is missing
        raise AssertionError(f"tillpoint serve did not refuse to start: {exc.stderr!r}") from None


@pytest.mark.parametrize(
    ("key", "environment", "says"),
    [
        (live_key(), "", "'sandbox'"),  # TILLPOINT_ENVIRONMENT unset: sandbox by default
        (live_key(), "sandbox", "'sandbox'"),
        (live_key("rk_live_"), "sandbox", "'sandbox'"),  # a restricted live key is live too
        (sandbox_key(), "production", "'production'"),
    ],
    ids=["live-unset", "live-sandbox", "restricted-live-sandbox", "test-production"],
)
def test_serve_refuses_a_key_of_the_other_environment(
    tmp_path: Path, key: str, environment: str, says: str
) -> None:
    result = serve(tmp_path, stripe_api_key=key, environment=environment)

    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    (line,) = lines
    assert line.startswith("tillpoint: refusing to start: TILLPOINT_STRIPE_API_KEY is "), line
    assert "TILLPOINT_ENVIRONMENT" in line
    assert says in line
    assert key not in output
    assert key[8:] not in output  # nor its secret part alone
    assert "Traceback" not in output
    assert "serve.starting" not in output  # refused before anything started


@pytest.mark.parametrize(
    ("key", "environment"),
    [(sandbox_key(), "sandbox"), (live_key(), "production"), (live_key("rk_live_"), "production")],
    ids=["test-sandbox", "live-production", "restricted-live-production"],
)
def test_a_key_of_its_own_environment_passes_the_preflight(
    tmp_path: Path, key: str, environment: str
) -> None:
    settings = settings_for(
        f"sqlite+aiosqlite:///{tmp_path / 'tillpoint.db'}",
        stripe_api_key=key,
        environment=environment,
    )

    assert settings.credential_refusal() is None
    preflight(settings)  # raises ConfigurationRefused if it refuses


def test_the_preflight_itself_refuses_a_mismatch() -> None:
    """The in-process check the positive cases rely on does refuse (so passing means something)."""
    settings = settings_for(
        "sqlite+aiosqlite:///unused.db", stripe_api_key=sandbox_key(), environment="production"
    )
    with pytest.raises(ConfigurationRefused, match="TILLPOINT_ENVIRONMENT is 'production'"):
        preflight(settings)
