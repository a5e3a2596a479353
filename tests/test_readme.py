"""README.md stays true: its configuration example loads and CI runs its test command."""

from __future__ import annotations

import re
from pathlib import Path

from core.settings import load_settings


def test_readme_toml_example_is_a_valid_configuration(repo_root: Path, tmp_path: Path) -> None:
    """The TOML in the README's Configuration section loads into Settings as written."""
    readme = (repo_root / "README.md").read_text()
    blocks = re.findall(r"```toml\n(.*?)```", readme, flags=re.S)
    assert blocks, "the README has no TOML example"
    config = tmp_path / "ghgwatch.toml"
    config.write_text(blocks[0].replace("…", "x"))
    settings = load_settings(config)
    assert settings.kafka.partitions == 12
    assert settings.detection.mine_levels["T1"].cut_pct_vol == 1.5
    assert settings.alerts.routes[0].targets == ("mine-duty",)


def test_ci_runs_the_readme_test_command(repo_root: Path) -> None:
    """.ci/run calls exactly the test command the README gives newcomers."""
    readme = (repo_root / "README.md").read_text()
    match = re.search(r"pip install -e '\.\[dev\]' && (pytest[^\n`]*)", readme)
    assert match, "the README does not give the test command"
    ci = (repo_root / ".ci" / "run").read_text()
    assert f"\n{match.group(1)}\n" in ci
