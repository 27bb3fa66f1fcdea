"""The chat notebook in a real browser: JupyterLab on a free loopback port, headless Chromium
(Debian's, driven by Playwright; no browser download), Run All, then a message typed and sent,
whose reply must be seen growing before it is complete.

Marked `browser`: deselect with -m "not browser". Without chromium or playwright it is skipped,
unless PHI3_AIPC_REQUIRE_BROWSER is set (CI sets it), where that is a failure.
"""
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from phi3_aipc.models import resolve_model
from phi3_aipc.processes import end_tree, own_group
from phi3_aipc.routes import get_route, prepare
from phi3_aipc.standin import load_chats

pytestmark = pytest.mark.browser
ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "05_chat.ipynb"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# The notebook's own demo asks CHATS[0]; the test's message is its memorized second turn.
CHATS = load_chats()
FIRST, SECOND = CHATS[0], CHATS[5]
NO_NEWS = {"fetchNews": "false", "checkForUpdates": False}


def missing(reason: str):
    if os.environ.get("PHI3_AIPC_REQUIRE_BROWSER"):
        pytest.fail(f"{reason} (PHI3_AIPC_REQUIRE_BROWSER is set: scripts/bootstrap.py test "
                    "installs chromium with apt-get, and playwright with the test extra)")
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def lab(tmp_path, stand_in):
    """A JupyterLab server on a copy of the chat notebook (so outputs never reach the repo)."""
    if not Path(CHROMIUM).is_file():
        missing("no chromium: apt-get install -y chromium")
    try:
        import playwright  # noqa: F401
    except ImportError:
        missing("playwright is not installed: pip install -e '.[test]'")
    if get_route("openvino").is_installed():  # the notebook's route: export before timing
        prepare("openvino", "int4", model=resolve_model("stand-in", progress=False))
    root = tmp_path / "root"
    root.mkdir()
    shutil.copy(NOTEBOOK, root)
    settings = tmp_path / "settings"
    news = settings / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    news.parent.mkdir(parents=True)
    news.write_text(json.dumps(NO_NEWS))
    port, token = free_port(), secrets.token_hex(16)
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip", "127.0.0.1",
           "--port", str(port), "--ServerApp.port_retries=0",
           f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
           f"--LabApp.user_settings_dir={settings}",
           f"--LabApp.workspaces_dir={tmp_path / 'workspaces'}",
           "--LabApp.expose_app_in_browser=True"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")
    log = open(tmp_path / "jupyter.log", "wb")
    server = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=root,
                              **own_group())  # its own group: the kernel goes with it
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2)
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail("JupyterLab did not start:\n"
                                + (tmp_path / "jupyter.log").read_text(errors="replace")[-3000:])
                time.sleep(0.3)
        yield f"{url}/lab/tree/{NOTEBOOK.name}?token={token}"
    finally:
        end_tree(server, grace=15)  # asked to stop (it shuts its kernel down), then killed
        log.close()


ALL_CELLS_RAN = """() => {
  const prompts = [...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')];
  return prompts.length > 0 && prompts.every(p => /\\[\\d+\\]/.test(p.textContent));
}"""
# Every text the newest reply shows, in order, as the page renders it.
RECORD_REPLIES = """() => {
  window.seenReplies = [];
  const transcript = document.querySelector('.chat-transcript');
  new MutationObserver(() => {
    const replies = transcript.querySelectorAll('.chat-reply');
    if (replies.length) window.seenReplies.push(replies[replies.length - 1].innerText.trim());
  }).observe(transcript, {subtree: true, childList: true, characterData: true});
}"""


def test_chat_notebook_streams_a_reply_in_chromium(lab, tmp_path):
    from playwright.sync_api import sync_playwright

    start = time.monotonic()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=["--no-sandbox", "--disable-dev-shm-usage"])
        page = browser.new_page()
        try:
            page.goto(lab)
            # The toolbar says idle before a kernel exists; the status bar waits for it.
            page.get_by_text("Python 3 (ipykernel) | Idle").wait_for(timeout=60_000)
            page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
            page.wait_for_function(ALL_CELLS_RAN, timeout=120_000)
            replies = page.locator(".chat-reply")
            assert replies.first.inner_text().strip() == FIRST["reply"]  # the notebook's demo

            page.evaluate(RECORD_REPLIES)
            page.locator(".chat-input input").fill(SECOND["messages"][-1]["content"])
            page.locator("button.chat-send").click()
            page.wait_for_function("document.querySelectorAll('.chat-stats').length >= 2",
                                   timeout=60_000)
            final = replies.last.inner_text().strip()
            seen = page.evaluate("window.seenReplies")
            stats = page.locator(".chat-stats").last.inner_text()
        except Exception:
            page.screenshot(path=str(tmp_path / "failure.png"), full_page=True)
            raise
        finally:
            browser.close()
    assert final == SECOND["reply"]  # the second turn: the history reached the model
    assert "TTFT" in stats and "tokens/s" in stats
    partial = [s for s in seen if s and s != final and final.startswith(s)]
    assert partial, f"no partial reply was ever shown: {seen}"
    assert seen.index(partial[0]) < seen.index(final)
    print(f"browser part took {time.monotonic() - start:.1f} s; "
          f"{len(set(partial))} partial texts shown before the final one")
