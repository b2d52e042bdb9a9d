"""The docs stay true: every command is in the README, every setting in config.example.toml,
every module on the README's architecture map (sqlite-utils keeps its docs honest this way)."""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path

import pytest
from pydantic import BaseModel

from testdb.cli import app
from testdb.config import Settings, load_settings

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
EXAMPLE = (ROOT / "config.example.toml").read_text()
PACKAGE = ROOT / "src" / "testdb"


def command_names() -> list[str]:
    names = [c.name or (c.callback.__name__ if c.callback else "") for c in app.registered_commands]
    for group in app.registered_groups:
        sub = group.typer_instance
        assert sub is not None and group.name
        names += [
            f"{group.name} {c.name or (c.callback.__name__ if c.callback else '')}"
            for c in sub.registered_commands
        ]
    return names


def setting_keys(model: type[BaseModel], table: str = "") -> list[tuple[str, str]]:
    """(table, key) for every setting, nested tables included."""
    found = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            found += setting_keys(annotation, name)
        else:
            found.append((table, name))
    return found


def example_keys() -> set[tuple[str, str]]:
    """Keys of config.example.toml, commented-out examples included."""
    found, table = set(), ""
    for line in EXAMPLE.splitlines():
        if header := re.fullmatch(r"\[(\w+)\]", line.strip()):
            table = header.group(1)
        elif key := re.match(r"#?\s*(\w+)\s*=", line):
            found.add((table, key.group(1)))
    return found


@pytest.mark.parametrize("command", command_names())
def test_every_command_is_in_the_readme(command: str) -> None:
    assert f"testdb {command}" in README


@pytest.mark.parametrize(("table", "key"), setting_keys(Settings))
def test_every_setting_is_in_config_example(table: str, key: str) -> None:
    if (table, key) == ("", "env"):
        assert "[env]" in EXAMPLE  # a free-form table of templates
        return
    assert (table, key) in example_keys()


def test_config_example_loads_as_a_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith("TESTDB_")]:
        monkeypatch.delenv(name)
    (tmp_path / "testdb.toml").write_text(EXAMPLE)
    assert load_settings(tmp_path).prefix == tomllib.loads(EXAMPLE)["prefix"]


def architecture_block() -> str:
    section = README.split("## Architecture", 1)[1]
    return section.split("```", 2)[1]


@pytest.mark.parametrize(
    "module", sorted(str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py") if p.name != "__init__.py")
)
def test_every_module_is_on_the_architecture_map(module: str) -> None:
    block = architecture_block()
    parts = module.split("/")
    assert parts[-1] in block or (len(parts) > 1 and parts[-1].removesuffix(".py") in block), module
