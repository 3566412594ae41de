"""The README's run command, once through: `tests/demo.py --once` (what `tests/demo.sh --once`
runs after installing) on real AmneziaWG shows the seller's story end to end."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from daemon import ROOT
from wgbed import available

pytestmark = [pytest.mark.wireguard]
pytest.importorskip("babel", reason="the demo prints the bot's texts (Babel)")


@pytest.mark.skipif(available() is not None, reason="needs root, /dev/net/tun and wireguard-go or amneziawg-go")
def test_the_demo_tells_the_sellers_story() -> None:
    env = {**os.environ, "COLUMNS": "80"}
    run = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "demo.py"), "--once"],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        check=False,
    )
    out = run.stdout
    assert run.returncode == 0, run.stdout + run.stderr
    plan = out.index("$ awgctl plan set ")
    warning, exceeded = out.index("quota.warning", plan), out.index("quota.exceeded", plan)
    blocked = out.index("peer.blocked    ", plan)
    paused_en = out.index("⛔ VPN paused: the traffic limit is used up", blocked)
    paused_ru = out.index("⛔ VPN приостановлен: лимит трафика исчерпан", paused_en)
    top_up = out.index("Alice buys", paused_ru)
    unblocked = out.index("peer.unblocked", top_up)
    assert plan < warning < exceeded < blocked < paused_en < paused_ru < top_up < unblocked
    after = out[unblocked:]
    assert "🟢 Online" in after and "🟢 В сети" in after and "VPN paused" not in after  # noqa: RUF001
    assert "Alice's phone" in after and "&#x27;" not in out  # a name, not HTML
    assert out.count("RX: received from the peer (its upload)") >= 4  # the legend under each table
    tables = [line for line in out.splitlines() if re.match(r"(KEY|INTERFACE)\s", line)]
    rows = [line for line in out.splitlines() if re.match(r"[A-Za-z0-9+/]{12}…  ", line)]
    assert tables and rows and all(len(line) <= 80 for line in tables + rows)
    assert "removed the namespaces, interfaces and files it created" in out
