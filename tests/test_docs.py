"""The man pages, the shipped config, the README and docs/ stay in step with the code: the
site builds with every link whole, what the code cites exists, the method list, the config
keys and the ledger's schema are the code's."""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from awgd.api import METHODS
from awgd.client_settings import CLIENT_KEYS
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
    reference = text("docs/config.md")
    for section, keys in SCHEMA.items():
        assert f".SH [{section}]" in manual
        assert f"[{section}]" in shipped
        for key in keys:
            assert f".B {key}\n" in manual, f"{section}.{key} missing from awgd.toml(5)"
            assert f"#{key} = " in shipped, f"{section}.{key} missing from the shipped config"
            assert f"`{section}.{key}`" in reference, f"{section}.{key} missing from docs/config.md"
    clients = manual.split(".SH [clients]", 1)[1].split(".SH ", 1)[0]
    shipped_clients = shipped.split("[clients]", 1)[1]
    for key in CLIENT_KEYS:  # [clients] has its own shape: no default for endpoint
        assert f".B {key}\n" in clients, f"clients.{key} missing from awgd.toml(5)"
        assert f"{key} = " in shipped_clients, f"clients.{key} missing from the shipped config"
        assert f"`clients.{key}`" in reference, f"clients.{key} missing from docs/config.md"
    for section, key in re.findall(r"`([a-z]+)\.([a-z_]+)`", reference):
        if section == "clients":
            assert key in CLIENT_KEYS, f"docs/config.md names clients.{key}, which the config does not have"
        if section in SCHEMA and f"{section}.{key}" not in METHODS:
            assert key in SCHEMA[section], f"docs/config.md names {section}.{key}, which the config does not have"


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
    for path in [*sources(), ROOT / "README.md"]:
        content = path.read_text()
        assert "shared/" not in content, f"{path} cites ../shared, which a clone does not have"
        for cited in re.findall(r"docs/[A-Z]+\.md", content):
            assert (ROOT / cited).exists(), f"{path} cites {cited}"


# A place in docs/ that code or docs cite: `docs/X.md, "Heading"` (also without the comma, or
# in parentheses); the quoted text is a heading's beginning there.
CITED_HEADING = re.compile(r'(docs/[A-Za-z-]+\.md)[,:]? *\(?"([^"]+)"')
# README is read on GitHub, docs/ as a site and on GitHub: under this it is one screenful of
# what awgd is, the two commands, install, a bot and awgctl, and the links (issue 27).
MAX_README_BYTES = 15 * 1024


def sources() -> list[Path]:
    return [*ROOT.glob("awgd/*.py"), *ROOT.glob("client/awgd_client/*.py"), *ROOT.glob("fleet/awgd_fleet/*.py")]


def headings(path: Path) -> list[str]:
    lines = path.read_text().splitlines()
    return [re.sub(r"[#`*]", "", line).strip().lower() for line in lines if line.startswith("#")]


@needs_source
def test_every_cited_heading_exists() -> None:
    cited = 0
    for path in [*sources(), *ROOT.glob("docs/*.md"), ROOT / "README.md"]:
        for doc, quoted in CITED_HEADING.findall(path.read_text()):
            target = ROOT / doc
            assert target.exists(), f"{path.name} cites {doc}"
            wanted = " ".join(quoted.split()).lower()
            assert any(h.startswith(wanted) for h in headings(target)), f"{path.name} cites {doc}, {quoted!r}"
            cited += 1
    assert cited >= 10  # the pattern still finds the citations


@needs_source
def test_the_readme_is_short_and_its_links_hold() -> None:
    readme = ROOT / "README.md"
    assert readme.stat().st_size < MAX_README_BYTES
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", readme.read_text())
    assert links
    for link in links:
        if "://" not in link:
            assert (ROOT / link).exists(), f"README links to {link}, which does not exist"


@needs_source
def test_the_design_states_the_ledgers_schema_as_the_code_has_it() -> None:
    from awgd.ledger_schema import SCHEMA_VERSION, metadata

    design = text("docs/DESIGN.md")
    assert re.findall(r"Schema version (\d+)", design) == [str(SCHEMA_VERSION)]
    ledger = design.split("## The ledger", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `([a-z_]+)` \|", ledger, re.MULTILINE))
    assert documented == set(metadata.tables)


@needs_source
def test_the_docs_site_builds_with_every_link_whole(tmp_path: Path) -> None:
    if importlib.util.find_spec("mkdocs") is None:
        if os.environ.get("CI"):
            pytest.fail("mkdocs is not installed: tests/run.sh installs it in both legs")
        pytest.skip("needs mkdocs (Debian package mkdocs)")
    built = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    assert (tmp_path / "site" / "API" / "index.html").exists()
    nav = text("mkdocs.yml")
    for page in ROOT.glob("docs/*.md"):
        assert f": {page.name}" in nav, f"docs/{page.name} is not in mkdocs.yml's nav"


@needs_source
def test_the_configs_api_summary_names_exactly_the_daemons_methods() -> None:
    summary = text("docs/config.md").split("## The API", 1)[1].split("\n## ", 1)[0]
    named = {name for name in re.findall(r"`([a-z]+\.[a-z_]+)`", summary) if name.split(".")[0] in _PREFIXES}
    assert named == set(METHODS)


_PREFIXES = {name.split(".")[0] for name in METHODS}


@needs_source
def test_the_readme_and_the_bots_guide_show_the_bot_flow_the_suite_runs() -> None:
    """Their bot example is docs/examples/bot_flow.py's own code (tests/test_devices.py runs it)."""
    flow = text("docs/examples/bot_flow.py")
    for path, heading in (("README.md", "## A bot's whole flow"), ("docs/bots.md", "## A new user's config")):
        section = text(path).split(heading, 1)[1]
        snippet = section.split("```python\n", 1)[1].split("```", 1)[0]
        for command in ("buy", "stats", "renew"):
            assert f'Command("{command}")' in snippet, (path, command)
        assert snippet.startswith("def build_router(") and snippet in flow, f"{path}'s example is not bot_flow.py's"
