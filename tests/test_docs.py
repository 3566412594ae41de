"""The man pages, the shipped config and the README stay in step with the code."""

from __future__ import annotations

import argparse
import re
import tomllib
from pathlib import Path

import pytest

from awgd.api import METHODS
from awgd.config import SCHEMA, Config, parse
from awgd_client.awgctl import parser as awgctl_parser

ROOT = Path(__file__).resolve().parent.parent
needs_source = pytest.mark.skipif(not (ROOT / "debian").is_dir(), reason="needs the source tree")


def text(path: str) -> str:
    return (ROOT / path).read_text()


@needs_source
def test_every_config_key_is_documented_and_shipped() -> None:
    manual = text("debian/man/awgd.toml.5")
    shipped = text("systemd/awgd.toml")
    readme = text("README.md")
    for section, keys in SCHEMA.items():
        assert f".SH [{section}]" in manual
        assert f"[{section}]" in shipped
        for key in keys:
            assert f".B {key}\n" in manual, f"{section}.{key} missing from awgd.toml(5)"
            assert f"#{key} = " in shipped, f"{section}.{key} missing from the shipped config"
            assert f"`{section}.{key}`" in readme, f"{section}.{key} missing from the README"


@needs_source
def test_shipped_config_uncommented_is_the_default() -> None:
    shipped = text("systemd/awgd.toml").splitlines()
    lines = [re.sub(r"^#([a-z_]+ = )", r"\1", line) for line in shipped]
    # The commented examples hold two exec_prefix lines; the last one is the default.
    data = tomllib.loads("\n".join(line for line in lines if not line.startswith('exec_prefix = ["docker"')))
    assert parse(data) == Config(zone=parse({}).zone)


@needs_source
def test_awgctl_manual_names_every_command_and_option() -> None:
    manual = text("debian/man/awgctl.1")
    main = awgctl_parser()
    commands = next(a for a in main._actions if isinstance(a, argparse._SubParsersAction))
    for name, sub in commands.choices.items():
        assert f".B {name}" in manual or f".BI {name} " in manual or f".BR {name} " in manual, name
        for action in sub._actions:
            for option in action.option_strings:
                if option.startswith("--") and option != "--help":
                    assert option.replace("-", "\\-") in manual, f"{name} {option}"


@needs_source
def test_awgd_manual_names_every_option() -> None:
    manual = text("debian/man/awgd.8")
    for option in ("--config", "--check-config", "--version"):
        assert option.replace("-", "\\-") in manual


@needs_source
def test_the_api_document_lists_exactly_the_daemons_methods() -> None:
    documented = re.findall(r"^### `([a-z_.]+)`", text("docs/API.md"), re.MULTILINE)
    assert sorted(documented) == sorted(METHODS)
    for name, method in METHODS.items():
        section = text("docs/API.md").split(f"### `{name}`", 1)[1].split("\n### ", 1)[0]
        assert ("*Admin.*" in section) is method.admin, name
        for param in method.params:
            assert f"`{param}`" in section, f"{name}: {param} is not documented"


@needs_source
def test_docs_and_code_cite_only_what_the_repository_holds() -> None:
    for path in [*ROOT.glob("awgd/*.py"), *ROOT.glob("client/awgd_client/*.py"), ROOT / "README.md"]:
        content = path.read_text()
        assert "shared/" not in content, f"{path} cites ../shared, which a clone does not have"
        for cited in re.findall(r"docs/[A-Z]+\.md", content):
            assert (ROOT / cited).exists(), f"{path} cites {cited}"
