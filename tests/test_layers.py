"""The layer rules (docs/architecture.md "How the rules are checked") hold, and breaking one
fails `lint-imports`, the check `make lint` runs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"
CONTRACTS = (
    "domain imports nothing of tillpoint outside domain",
    "service imports only domain (ports are service's own)",
    "adapters and config import service and domain, never bootstrap or entrypoints",
    "entrypoints reach adapters only through bootstrap",
)


def _lint_imports(src: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(src), "NO_COLOR": "1", "COLUMNS": "300"}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", str(ROOT / "pyproject.toml")],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_layer_contracts_hold(tmp_path: Path) -> None:
    result = _lint_imports(ROOT / "src", tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    for name in CONTRACTS:
        assert f"{name} KEPT" in result.stdout
    assert "0 broken" in result.stdout


def test_an_entrypoint_importing_an_adapter_breaks_the_check(tmp_path: Path) -> None:
    src = tmp_path / "src"
    shutil.copytree(ROOT / "src" / "tillpoint", src / "tillpoint")
    health = src / "tillpoint" / "entrypoints" / "api" / "routes" / "health.py"
    health.write_text(
        health.read_text().replace(
            "from fastapi import APIRouter\n",
            "from fastapi import APIRouter\n\nfrom tillpoint.adapters.telemetry import REGISTRY\n",
        )
    )
    result = _lint_imports(src, tmp_path)
    assert result.returncode != 0
    assert "entrypoints reach adapters only through bootstrap BROKEN" in result.stdout
    chain = "tillpoint.entrypoints.api.routes.health -> tillpoint.adapters.telemetry"
    assert chain in result.stdout
