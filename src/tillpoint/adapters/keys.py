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
    """Looks keys up by their SHA-256, compares in constant time, never keeps them in logs.

    A key's principal is its `id`: several values may share one id (a rotation in progress),
    and must then stand for the same role and subject. A key without an id stands for a
    principal derived from its value (reordering the list changes nothing; rotating it starts
    a new principal, so give keys ids)."""

    def __init__(self, keys: list[ApiKey]) -> None:
        self._by_digest: dict[str, Principal] = {}
        by_id: dict[str, Principal] = {}
        for key in keys:
            digest = sha256(key.key.get_secret_value().encode()).hexdigest()
            principal = Principal(
                id=f"key:{key.id}" if key.id else f"key:{digest[:16]}",
                role=key.role,
                subject=key.subject,
            )
            if key.id is not None:
                known = by_id.setdefault(key.id, principal)
                if known != principal:
                    raise ConfigurationRefused(
                        f"TILLPOINT_API_KEYS: the keys with id {key.id!r} differ in role or "
                        "subject; values of one id (a rotation) must stand for the same caller"
                    )
            if digest in self._by_digest and self._by_digest[digest] != principal:
                raise ConfigurationRefused("TILLPOINT_API_KEYS lists one key value twice")
            self._by_digest[digest] = principal

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
            {"id": "dev-admin", "key": f"tp_admin_{secrets.token_urlsafe(24)}", "role": "admin"},
            {
                "id": "dev-service",
                "key": f"tp_service_{secrets.token_urlsafe(24)}",
                "role": "service",
            },
        ]
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(keys, handle, indent=2)
    raw = json.loads(path.read_text())
    return [ApiKey.model_validate(item) for item in raw], path
