"""The architecture's rules, read from the source (docs/DESIGN.md, "One owner for each fact"):
who may import what, and who may change the books. A rule broken here is how state came to
be changed from two places before."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DAEMON = ROOT / "awgd"
CLIENT = ROOT / "client" / "awgd_client"
FLEET = ROOT / "fleet" / "awgd_fleet"
pytestmark = pytest.mark.skipif(not DAEMON.is_dir(), reason="needs the source tree")

# The books' methods that change them; only the books and the bookkeeper call them.
MUTATORS = frozenset(
    {"take", "commit", "failed", "roll", "settle", "apply", "restored", "name_peers", "address_interfaces", "watch"}
)
# The one function outside the bookkeeper that may call one: the sample's `take`, which the
# bookkeeper itself calls under its lock (awgd.sampling.Sampler.book).
CALLED_BY_THE_BOOKKEEPER = {("sampling.py", "take"), ("sampling.py", "judge")}


def imports(path: Path, *, typing_too: bool = True) -> set[str]:
    """The modules `path` imports; without `typing_too`, not those for type checking only."""
    tree = ast.parse(path.read_text())
    if not typing_too:
        for node in ast.walk(tree):
            if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
                node.body = []
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_the_ledger_and_the_plans_rules_do_not_know_the_books() -> None:
    for name in ("plans.py", "ledger.py", "peer_settings.py", "quota.py", "plan_windows.py"):
        assert "awgd.books" not in imports(DAEMON / name), name
    # The entry lists the books it concerns, for the books' commit: by type only.
    assert "awgd.books" not in imports(DAEMON / "entry.py", typing_too=False)
    assert "awgd.bookkeeper" not in imports(DAEMON / "books.py")


def test_only_the_books_and_the_bookkeeper_change_the_books() -> None:
    offenders = []
    for path in sorted(DAEMON.glob("*.py")):
        if path.name in ("books.py", "bookkeeper.py"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            owner = node.func.value
            named = owner.attr if isinstance(owner, ast.Attribute) else getattr(owner, "id", "")
            mutates = node.func.attr in MUTATORS and "books" in named
            if mutates and (path.name, node.func.attr) not in CALLED_BY_THE_BOOKKEEPER:
                offenders.append(f"{path.name}:{node.lineno} {named}.{node.func.attr}()")
    assert not offenders, offenders


def test_the_client_imports_neither_the_daemon_nor_the_fleet() -> None:
    for path in sorted(CLIENT.rglob("*.py")):
        for module in imports(path):
            assert module.split(".")[0] not in ("awgd", "awgd_fleet"), f"{path.name} imports {module}"


def test_the_fleet_builds_on_the_client_alone() -> None:
    for path in sorted(FLEET.rglob("*.py")):
        assert not any(module.split(".")[0] == "awgd" for module in imports(path)), path
