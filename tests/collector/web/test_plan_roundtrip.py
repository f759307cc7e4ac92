"""A plan sent from the device page runs on a real `ctxscope agent serve` (tiny models on CPU) and
its results appear on the page; a bad plan is refused by the agent with its reason shown."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ctxscope.collector.web.server import Dashboard

pytestmark = [pytest.mark.slow, pytest.mark.browser]
playwright_sync = pytest.importorskip("playwright.sync_api")
pytest.importorskip("torch")
CHROMIUM = shutil.which("chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]  # fmt: skip
DEVICE = "roundtrip-1"
SCREENSHOTS = Path(tempfile.gettempdir()) / "ctxscope-screenshots"
# A row of the acks table with the command id (any when null) and "accepted" cell value.
ACK_SHOWN = """([id, accepted]) => [...document.querySelectorAll('#acks tbody tr')].some(
    r => (id === null || r.cells[0].textContent === id) && r.cells[2].textContent === accepted)"""


@pytest.fixture
def agent(broker, dashboard, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    command = [
        sys.executable, "-c", "from ctxscope.cli import main; main()", "agent", "serve",
        "--device", DEVICE, "--broker", f"{broker.host}:{broker.port}", "--spool", str(tmp_path / "spool.db"),
        "--telemetry-rate-hz", "0", "--torch-device", "cpu",
    ]  # fmt: skip
    child = subprocess.Popen(command, stderr=(tmp_path / "agent.log").open("wb"))
    deadline = time.monotonic() + 60
    while not any(
        d["device"] == DEVICE and d["state"] == "online" for d in dashboard.service.store.devices()
    ):
        assert child.poll() is None, (tmp_path / "agent.log").read_text()
        assert time.monotonic() < deadline, "the agent did not come online"
        time.sleep(0.2)
    yield child
    child.send_signal(signal.SIGTERM)
    try:
        child.wait(30)
    except subprocess.TimeoutExpired:
        child.kill()


def wait_for_run(dashboard: Dashboard, timeout_s: float) -> None:
    """Until the agent reports its run finished; fails at once with the agent's error log if any."""
    store = dashboard.service.store
    deadline = time.monotonic() + timeout_s
    while not any(r["outcome"] for r in store.runs(DEVICE)):
        errors = [row["message"] for row in store.logs(DEVICE) if row["level"] == "error"]
        assert not errors, f"the agent failed: {errors}"
        assert time.monotonic() < deadline, "the run did not finish"
        time.sleep(0.5)
    (run,) = store.runs(DEVICE)
    assert run["outcome"] == "completed", run


def post_plan(client: Any, body: dict[str, Any]) -> dict[str, Any]:
    """Post as the page does: with the session's CSRF token."""
    client.page(f"/devices/{DEVICE}")
    status, answer = client.post_json(f"/api/devices/{DEVICE}/plans", body)
    assert status == 202, answer
    return answer


def test_plan_from_the_page_runs_on_agent_serve_and_results_appear(dashboard, agent, web_client):
    if CHROMIUM is None:
        pytest.skip("Debian's chromium is not installed")
    with playwright_sync.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        page = browser.new_page()
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.goto(f"{dashboard.web.url}/devices/{DEVICE}")
        page.wait_for_selector("#live.on")
        page.wait_for_selector("#plan-choice option[value=cpu-smoke]", state="attached")
        page.select_option("#plan-choice", "cpu-smoke")
        assert 'name = "cpu-smoke"' in page.input_value("#plan-text")
        page.click("#plan-form button")
        page.wait_for_function(
            "() => document.getElementById('plan-result').textContent.startsWith('sent cmd-')"
        )
        page.wait_for_function(ACK_SHOWN, arg=[None, "yes"], timeout=30_000)
        # Three models x two lengths measured on CPU, then profiles and searches; the page reloads as
        # progress moves.
        wait_for_run(dashboard, timeout_s=180)
        page.wait_for_function(
            "() => document.querySelector('#runs tbody').textContent.includes('completed')", timeout=10_000
        )
        page.wait_for_function(
            "() => document.querySelectorAll('#maxctx tbody tr').length === 3", timeout=10_000
        )
        # The charts are redrawn after the tables: wait for the curves of the transformer and the SSM,
        # named as the shrunk variants that cpu-smoke (tiny = true) measures.
        page.wait_for_function(
            """() => ['qwen2.5-0.5b (shrunk) fp32', 'mamba2-780m (shrunk) fp32'].every(name => [
                ...document.querySelectorAll('#chart-ttft .legendtext')].some(t => t.textContent == name))""",
            timeout=10_000,
        )
        # Each model's operator shares and its maximum-context search (64 -> 128 tokens, a lower bound).
        page.wait_for_selector("#chart-operator_shares .main-svg", timeout=10_000)
        searched = page.locator("#maxctx tbody tr").all_inner_texts()
        assert all("128" in row for row in searched), searched
        # A plan naming a model the zoo lacks is refused by the agent, and the reason reaches the page.
        refused = post_plan(
            web_client(dashboard.web.url),
            {"plan_toml": 'name = "bad"\nmodels = ["no-such-model"]\ncontext_lengths = [32]\n'},
        )
        page.wait_for_function(ACK_SHOWN, arg=[refused["command_id"], "no"], timeout=30_000)
        reason = page.locator("#acks tbody tr", has_text=refused["command_id"]).inner_text()
        assert "no-such-model" in reason
        page.screenshot(
            path=str(Path(__import__("tempfile").gettempdir()) / "ctxscope-screenshots" / "roundtrip.png"),
            full_page=True,
        )
        browser.close()
    assert errors == []
