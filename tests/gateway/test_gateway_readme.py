"""The README's gateway configuration example loads as written."""

from __future__ import annotations

import re
from pathlib import Path

from core.settings import load_settings
from wire.schemas import SourceKind


def test_readme_gateway_example_loads(repo_root: Path, tmp_path: Path) -> None:
    readme = (repo_root / "README.md").read_text()
    blocks = [b for b in re.findall(r"```toml\n(.*?)```", readme, flags=re.S) if "[gateway]" in b]
    assert blocks, "the README has no gateway example"
    config = tmp_path / "gateway.toml"
    config.write_text(blocks[0])
    settings = load_settings(config)
    logger = settings.gateway.loggers["010000A8900016F000169DC0"]
    assert logger.kind is SourceKind.CEMS
    assert settings.gateway.codes["p10001"].metric == "load_mw"
