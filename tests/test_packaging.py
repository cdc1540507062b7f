"""The package installs on every supported Python and ships the license it names (issue 9)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from packaging.specifiers import SpecifierSet

ROOT = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


@pytest.mark.parametrize("version", ["3.11.7", "3.12.1", "3.13.0"])
def test_every_supported_python_may_install_it(version: str) -> None:
    assert version in SpecifierSet(PROJECT["requires-python"])
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    assert version in SpecifierSet(lock["requires-python"])
    assert f"Programming Language :: Python :: {version.rsplit('.', 1)[0]}" in PROJECT.get(
        "classifiers", []
    )


def test_the_license_the_project_names_is_in_the_repository() -> None:
    assert PROJECT["license"] == {"text": "Apache-2.0"}
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text
    assert "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text
