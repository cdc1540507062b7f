"""Every setting is documented: docs/configuration.md names each `TILLPOINT_*` variable."""

from __future__ import annotations

from pathlib import Path

from tillpoint.config import Settings

CONFIGURATION = Path(__file__).parent.parent / "docs" / "configuration.md"


def test_every_setting_has_a_row_in_the_configuration_reference() -> None:
    text = CONFIGURATION.read_text()
    rows = {line.split("|")[1].strip(" `") for line in text.splitlines() if line.startswith("| `")}

    missing = [f"TILLPOINT_{name.upper()}" for name in Settings.model_fields]
    assert [name for name in missing if name not in rows] == []
