"""`isthmus plugins`: installed plugins and whether a configuration enables them, as text and --json."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from .conftest import Run


def test_plugins_json_follows_the_config_and_matches_the_text(isthmus: Run, tmp_path: Path) -> None:
    config = tmp_path / "isthmus.yaml"
    config.write_text(yaml.safe_dump({"plugins": {"simulator": {"enabled": True}, "tasks": {"enabled": False}}}))
    done = isthmus("plugins", "--config", str(config), "--json")
    assert done.returncode == 0, done.stderr
    plugins = json.loads(done.stdout)["plugins"]
    assert all(set(p) == {"id", "enabled", "spec"} for p in plugins)
    by_id = {p["id"]: p["enabled"] for p in plugins}
    assert by_id["simulator"] is True and by_id["tasks"] is False  # the config wins over the defaults
    assert by_id["psij"] is True and by_id["workflows"] is False  # built-in defaults (workflows: a bridge plugin)
    assert [p["id"] for p in plugins] == sorted(by_id)

    text = isthmus("plugins", "--config", str(config))
    assert text.returncode == 0, text.stderr
    rows = [line.split("\t") for line in text.stdout.splitlines()]
    assert rows == [[p["id"], "enabled" if p["enabled"] else "disabled", p["spec"]] for p in plugins]
    assert "--json" in isthmus("plugins", "--help").stdout
