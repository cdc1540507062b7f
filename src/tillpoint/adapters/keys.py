"""API keys: configured ones, or generated development keys for the embedded default."""

from __future__ import annotations

import hmac
import json
import os
import secrets
from hashlib import sha256
from pathlib import Path

from tillpoint.config import ApiKey, ConfigurationRefused, Settings
from tillpoint.service.identity import Principal


class KeyStore:
    """Looks keys up by their SHA-256, compares in constant time, never keeps them in logs."""

    def __init__(self, keys: list[ApiKey]) -> None:
        self._by_digest: dict[str, Principal] = {}
        for index, key in enumerate(keys):
            digest = sha256(key.key.get_secret_value().encode()).hexdigest()
            self._by_digest[digest] = Principal(
                id=f"key{index}:{digest[:12]}", role=key.role, subject=key.subject
            )

    def authenticate(self, token: str) -> Principal | None:
        digest = sha256(token.encode()).hexdigest()
        for known, principal in self._by_digest.items():
            if hmac.compare_digest(known, digest):
                return principal
        return None

    def __len__(self) -> int:
        return len(self._by_digest)


class MissingApiKeys(ConfigurationRefused):
    pass


def load_keys(settings: Settings) -> tuple[list[ApiKey], Path | None]:
    """The configured keys; with the embedded database and none configured, dev keys kept in
    `<state_dir>/dev-keys.json` (created on first start). Returns the file when it was used."""
    if settings.api_keys:
        return list(settings.api_keys), None
    if not settings.embedded:
        raise MissingApiKeys(
            "TILLPOINT_API_KEYS is empty: set API keys before running against PostgreSQL"
        )
    path = Path(settings.state_dir) / "dev-keys.json"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        keys = [
            {"key": f"tp_admin_{secrets.token_urlsafe(24)}", "role": "admin"},
            {"key": f"tp_service_{secrets.token_urlsafe(24)}", "role": "service"},
        ]
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(keys, handle, indent=2)
    raw = json.loads(path.read_text())
    return [ApiKey.model_validate(item) for item in raw], path
