"""The web chat in headless Chromium (Debian's `chromium`, driven by Playwright): sign in with
a key, DeepThink on, send, see "Thought for N seconds" and the answer, reload, find the
conversation again. A screenshot goes to tests/artifacts/web_chat.png."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from serve_server import find_seed, shared

CHROMIUM = os.environ.get("R1KIT_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(__file__).parent / "artifacts"
Q = [{"role": "user", "content": "What is 3 + 4?"}]

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(),
    reason=f"no Chromium at {CHROMIUM}: `apt-get install -y chromium` (.ci/run does)",
)


def test_web_chat(tiny_tokenizer):
    from playwright.sync_api import expect, sync_playwright

    srv = shared()
    seed, reasoning, answer, _ = find_seed(srv, Q)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1100, "height": 700})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(f"{srv.url}/?seed={seed}")
        # a wrong key is refused, the right one signs in
        page.fill("#key", "sk-r1-00000000-wrong")
        page.click("#signin-form button")
        expect(page.locator("#signin-error")).to_contain_text("invalid API key")
        page.fill("#key", srv.key)
        page.click("#signin-form button")
        expect(page.locator("#app")).to_be_visible()
        toggle = page.locator("#deepthink")
        if toggle.get_attribute("aria-pressed") != "true":
            toggle.click()
        expect(toggle).to_have_attribute("aria-pressed", "true")
        page.fill("#input", Q[0]["content"])
        page.click("#send")
        summary = page.locator("details.thinking summary")
        expect(summary).to_have_text(re.compile(r"Thought for \d+ seconds?"), timeout=30_000)
        expect(page.locator(".msg.assistant .reasoning")).to_have_text(reasoning)
        expect(page.locator(".msg.assistant .answer")).to_contain_text(answer.split("\n")[0][:20])
        expect(page.locator("#conversations li")).to_have_count(1)
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "web_chat.png"))
        # reload: still signed in, the conversation is listed and opens with its thinking block
        page.reload()
        expect(page.locator("#conversations li").first).to_have_text(Q[0]["content"])
        page.goto(f"{srv.url}/")
        page.locator("#conversations li").first.click()
        expect(page.locator("details.thinking summary")).to_contain_text("Thought for")
        expect(page.locator(".msg.user")).to_have_text(Q[0]["content"])
        # DeepThink off: the answer comes without a thinking block
        page.locator("#new-chat").click()
        page.locator("#deepthink").click()
        expect(page.locator("#deepthink")).to_have_attribute("aria-pressed", "false")
        page.fill("#input", "Say hi")
        page.click("#send")
        expect(page.locator("#conversations li")).to_have_count(2, timeout=30_000)
        expect(page.locator("details.thinking")).to_have_count(0)
        browser.close()
        assert not errors, errors
