"""The web chat in headless Chromium (Debian's `chromium`, driven by Playwright), at a desktop
(1280x800) and a phone (375x812) viewport, against one real server over the embedded model:
layout (Send and DeepThink on screen, the sidebar a drawer on the phone), rendering (tables,
KaTeX, highlighted code, sanitized HTML), a streamed DeepThink answer with Copy, Regenerate and
Edit-and-resend, Stop (the engine's running count drops to 0), "New chat" mid-stream, a key over
its quota reading its history, Rename and Delete across reloads, IME-safe Enter. Each test signs
in with its own key so conversation lists do not mix. Screenshots go to tests/artifacts/."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import httpx
import pytest
from serve_server import find_seed, shared

CHROMIUM = os.environ.get("R1KIT_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(__file__).parent / "artifacts"
Q = [{"role": "user", "content": "What is 3 + 4?"}]
SIZES = {"desktop": (1280, 800), "phone": (375, 812)}

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(),
    reason=f"no Chromium at {CHROMIUM}: `apt-get install -y chromium` (.ci/run does)",
)

RICH = r"""Here is the comparison:

| n | $n^2$ | prime |
|---|-------|-------|
| 2 | 4     | yes   |
| 9 | 81    | no    |

Inline math $a^2 + b^2 = c^2$ and \(e^{i\pi} + 1 = 0\), then display math:

$$
\sum_{k=1}^{n} k = \frac{n(n+1)}{2}
$$

\[
\int_0^1 x^2\,dx = \frac{1}{3}
\]

So the answer is \boxed{42}.

```python
def square(x):
    return x * x
```

<img src=x onerror="window.pwned=1"> [click](javascript:window.pwned=2)"""

SAVED = [
    {"role": "user", "content": "Show me a table, some math and code"},
    {
        "role": "assistant",
        "content": RICH,
        "reasoning": "Let me lay it out.",
        "thought_s": 3.2,
        "think": True,
        "finish": "stop",
    },
    {"role": "user", "content": "Think forever"},
    {
        "role": "assistant",
        "content": "",
        "reasoning": "Hmm, and then",
        "thought_s": 9,
        "think": True,
        "finish": "length",
    },
]


@pytest.fixture(scope="module")
def srv():
    return shared()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture(params=list(SIZES))
def size(request) -> str:
    return request.param


class Chat:
    """One signed-in page (its own browser context and key) at one viewport size."""

    def __init__(
        self,
        browser,
        srv,
        size: str,
        query: str = "",
        key: str | None = None,
        scheme: str = "light",
        **key_kw,
    ) -> None:
        self.srv, self.size = srv, size
        self.key = key or srv.store.create_key("web", **key_kw)[0]
        self.key_id = self.key.split("-")[2]
        w, h = SIZES[size]
        self.ctx = browser.new_context(viewport={"width": w, "height": h}, color_scheme=scheme)
        self.ctx.grant_permissions(["clipboard-read", "clipboard-write"], origin=srv.url)
        self.page = self.ctx.new_page()
        self.errors: list[str] = []
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        # the console's errors (an HTTP error the page meant, a 402, shows here too)
        self.console: list[str] = []
        self.page.on("console", lambda m: m.type == "error" and self.console.append(m.text))
        # offline: nothing leaves the server, and every static file (KaTeX fonts too) loads
        self.page.on(
            "request",
            lambda r: (
                r.url.startswith((srv.url, "data:", "blob:"))
                or self.errors.append("off-site request " + r.url)
            ),
        )
        self.page.on(
            "response",
            lambda r: (
                "/static/" in r.url
                and r.status >= 400
                and self.errors.append(f"{r.status} {r.url}")
            ),
        )
        self.page.add_init_script(f"localStorage.setItem('r1kit-key', {json.dumps(self.key)})")
        self.page.goto(f"{srv.url}/{query}")
        self.page.locator("#app").wait_for()
        from playwright.sync_api import expect

        # start() ends by focusing the input, after it has opened a conversation or a new chat
        # (which rewrites the URL's #hash): a test that navigates before then races with it
        expect(self.page.locator("#input")).to_be_focused(timeout=30_000)

    @property
    def phone(self) -> bool:
        return self.size == "phone"

    def sidebar(self, open_: bool) -> None:
        """On the phone the conversation list is a drawer behind the menu button."""
        if self.phone and open_ != self.page.locator("aside").is_visible():
            if open_:
                self.page.click("#menu")
            else:  # a tap beside the drawer closes it
                self.page.locator("#backdrop").click(position={"x": 360, "y": 400})
            self.page.locator("aside").wait_for(state="visible" if open_ else "hidden")

    def new_chat(self) -> None:
        self.page.click("#new-chat-top" if self.phone else "#new-chat")

    def send(self, text: str) -> None:
        self.page.fill("#input", text)
        self.page.click("#send")

    def conversations(self) -> list[dict]:
        return self.srv.store.conversations(self.key_id)

    def stored(self, conv_id: str) -> dict:
        return self.srv.store.conversation(self.key_id, conv_id)

    def clipboard(self) -> str:
        return self.page.evaluate("navigator.clipboard.readText()")

    def close(self) -> None:
        self.ctx.close()
        assert not self.errors, self.errors


def health(srv) -> dict:
    return httpx.get(f"{srv.url}/health").json()


def idle(srv) -> None:
    """No request left running from an earlier test (a closed page's stream is aborted)."""
    wait_until(lambda: health(srv)["running"] == 0, 30, "an idle engine")


def wait_until(cond, timeout: float = 30.0, what: str = "condition"):
    t0 = time.monotonic()
    while not (v := cond()):
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
    return v


def inside(page, selector: str) -> bool:
    """The element is fully inside the viewport."""
    box = page.locator(selector).bounding_box()
    vp = page.viewport_size
    return (
        box is not None
        and box["x"] >= 0
        and box["y"] >= 0
        and box["x"] + box["width"] <= vp["width"]
        and box["y"] + box["height"] <= vp["height"]
    )


CONTRAST = """sels => {
  const rgb = c => c.match(/[\\d.]+/g).map(Number);
  const lum = c => rgb(c).slice(0, 3).map(v => v / 255)
    .map(v => v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4)
    .reduce((s, v, i) => s + v * [0.2126, 0.7152, 0.0722][i], 0);
  const bg = el => {  // the first opaque background at or above el
    for (; el; el = el.parentElement) {
      const c = getComputedStyle(el).backgroundColor, v = rgb(c);
      if (v.length < 4 || v[3] > 0) return c;
    }
    return "rgb(255, 255, 255)";
  };
  return Object.fromEntries(sels.map(s => {
    const el = document.querySelector(s);
    const a = lum(getComputedStyle(el).color), b = lum(bg(el));
    return [s, (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05)];
  }));
}"""
# text a reader must read: WCAG AA asks 4.5:1 for normal text
READABLE = [
    ".answer p",
    ".answer th",
    ".answer td",
    ".msg.user .body",
    "#send",
    "#deepthink",
    "#status",
    "#model-name",
    "#signout",
    "#title",
    "#conversations li.active .open",
    "details.thinking summary",
    ".reasoning",
    ".notice",
    ".code-head span",
    ".code-head .copy-code",
    ".msg .actions .icon",
]


def test_sign_in_and_layout(browser, srv, size):
    from playwright.sync_api import expect

    w, h = SIZES[size]
    ctx = browser.new_context(viewport={"width": w, "height": h})
    page = ctx.new_page()
    page.goto(srv.url)
    page.fill("#key", "sk-r1-00000000-wrong")
    page.click("#signin-form button")
    expect(page.locator("#signin-error")).to_contain_text("invalid API key")
    page.fill("#key", srv.key)
    page.keyboard.press("Enter")
    expect(page.locator("#app")).to_be_visible()
    for sel in ("#send", "#deepthink", "#input"):
        assert inside(page, sel), sel
    assert page.evaluate("document.documentElement.scrollWidth") <= w  # no sideways scrolling
    if size == "phone":
        expect(page.locator("aside")).to_be_hidden()
        expect(page.locator("#menu")).to_have_attribute("aria-expanded", "false")
        page.click("#menu")
        expect(page.locator("aside")).to_be_visible()
        expect(page.locator("#menu")).to_have_attribute("aria-expanded", "true")
        wait_until(lambda: inside(page, "#new-chat"), 5, "the drawer to slide in")
        page.keyboard.press("Escape")
        expect(page.locator("aside")).to_be_hidden()
    else:
        expect(page.locator("aside")).to_be_visible()
        expect(page.locator("#menu")).to_be_hidden()
    # every control has an accessible name
    unnamed = page.evaluate("""[...document.querySelectorAll('button, textarea, input')]
        .filter(e => e.offsetParent && !(e.getAttribute('aria-label') || e.textContent.trim()
                 || (e.id && document.querySelector(`label[for="${e.id}"]`))))
        .map(e => e.outerHTML)""")
    assert not unnamed, unnamed
    ctx.close()


def test_icon_and_a_clean_console(browser, srv):
    """The page names its icon, which loads: the browser asked for /favicon.ico, a 404 in its
    console; /favicon.ico itself answers too (a browser on a JSON route asks for it)."""
    r = httpx.get(srv.url + "/favicon.ico")
    assert r.status_code == 200 and r.headers["content-type"].startswith("image/svg+xml")
    chat = Chat(browser, srv, "desktop")
    page = chat.page
    href = page.evaluate("document.querySelector('link[rel=icon]')?.href")
    assert href is not None
    got = page.evaluate("u => fetch(u).then(r => [r.status, r.headers.get('content-type')])", href)
    assert got[0] == 200 and got[1].startswith("image/svg+xml"), got
    page.wait_for_load_state("networkidle")
    assert chat.console == []
    chat.close()


def test_rendering(browser, srv, size):
    from playwright.sync_api import expect

    scheme = "dark" if size == "phone" else "light"  # dark mode follows the system
    chat = Chat(browser, srv, size, scheme=scheme)
    for title in ("Prime factors of 360", "Rust borrow checker"):
        srv.store.save_conversation(chat.key_id, None, title, SAVED[:2])
    conv_id = srv.store.save_conversation(chat.key_id, None, "Table, math and code", SAVED)
    page = chat.page
    page.goto(f"{srv.url}/#{conv_id}")
    page.reload()
    first = page.locator(".msg.assistant").first
    answer = first.locator(".answer")
    expect(answer.locator("table")).to_have_count(1)
    expect(answer.locator("table th")).to_have_count(3)
    expect(answer.locator("table .katex")).to_have_count(1)  # $n^2$ in a header cell
    expect(answer.locator(".katex-display")).to_have_count(2)  # $$...$$ and \[...\]
    assert answer.locator(".katex").count() >= 6  # + 2 inline, \boxed, table cell
    expect(answer.locator(".katex .boxpad")).to_have_count(1)  # \boxed{42}
    expect(answer.locator("annotation")).to_contain_text([r"\boxed{42}"])
    assert "$" not in answer.inner_text().replace("$n^2$", "")  # no raw TeX left
    code = answer.locator("pre code.hljs")
    expect(code).to_have_count(1)
    expect(code.locator(".hljs-keyword").first).to_have_text("def")
    # sanitized: no raw HTML, no script URL
    assert answer.locator("img").count() == 0
    assert answer.locator("a[href^='javascript']").count() == 0
    assert page.evaluate("window.pwned") is None
    # a finished reasoning block comes folded, with its time
    expect(first.locator("details.thinking")).not_to_have_attribute("open", "")
    expect(first.locator("details.thinking summary")).to_have_text("Thought for 3 seconds")
    ratios = page.evaluate(CONTRAST, READABLE)
    assert all(r >= 4.5 for r in ratios.values()), ratios
    bg = page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert bg == ("rgb(22, 24, 29)" if scheme == "dark" else "rgb(255, 255, 255)")
    ARTIFACTS.mkdir(exist_ok=True)
    first.locator("details.thinking summary").click()  # unfold, for the screenshot
    page.screenshot(path=str(ARTIFACTS / f"webchat-{size}.png"))
    # copy a code block and the whole answer
    answer.locator(".copy-code").click()
    assert chat.clipboard() == "def square(x):\n    return x * x\n"
    first.locator("button.copy").click()
    assert chat.clipboard() == RICH
    # the answer cut by the length limit inside its reasoning says why it is empty
    notice = page.locator(".msg.assistant").nth(1).locator(".notice")
    expect(notice).to_be_visible()
    expect(notice).to_contain_text("length limit")
    expect(notice).to_contain_text("before it closed")
    expect(first.locator(".notice")).to_be_hidden()
    w = SIZES[size][0]
    assert page.evaluate("document.documentElement.scrollWidth") <= w
    chat.close()


def test_deepthink_copy_regenerate_edit(browser, srv, size, tiny_tokenizer):
    from playwright.sync_api import expect

    seed, reasoning, answer, _ = find_seed(srv, Q)
    chat = Chat(browser, srv, size, f"?seed={seed}&max_tokens=120")
    page = chat.page
    toggle = page.locator("#deepthink")
    if toggle.get_attribute("aria-pressed") != "true":
        toggle.click()
    chat.send(Q[0]["content"])
    msg = page.locator(".msg.assistant")
    expect(msg.locator("details.thinking summary")).to_have_text(
        re.compile(r"Thought for \d+ seconds?"), timeout=60_000
    )
    expect(msg.locator(".actions")).to_be_visible(timeout=60_000)
    expect(msg.locator(".reasoning")).to_have_text(reasoning)
    expect(msg.locator("details.thinking")).not_to_have_attribute("open", "")  # folded
    expect(page.locator("#status")).to_have_text("")
    msg.locator("button.copy").click()
    assert chat.clipboard() == answer
    (conv,) = chat.conversations()
    stored = chat.stored(conv["id"])["messages"]
    assert [m["role"] for m in stored] == ["user", "assistant"]
    assert stored[1]["content"] == answer and stored[1]["reasoning"] == reasoning
    # Regenerate: the same seed gives the same answer, and it replaces the old one
    msg.locator("button.regenerate").click()
    expect(msg).to_have_count(1)
    expect(msg.locator(".actions")).to_be_visible(timeout=60_000)
    expect(msg.locator(".reasoning")).to_have_text(reasoning)
    wait_until(lambda: len(chat.stored(conv["id"])["messages"]) == 2, what="regenerated save")
    # Edit the question and resend: later turns are replaced
    user = page.locator(".msg.user")
    user.locator("button.edit").click()
    page.locator(".edit textarea").fill("What is 3 + 5?")
    page.locator(".edit button.primary").click()
    expect(user).to_have_count(1)
    expect(user.locator(".body")).to_have_text("What is 3 + 5?")
    expect(msg.locator(".actions")).to_be_visible(timeout=60_000)
    stored = wait_until(
        lambda: (
            (m := chat.stored(conv["id"])["messages"])[0]["content"] == "What is 3 + 5?"
            and len(m) == 2
            and m
        ),
        what="edited save",
    )
    assert stored[1]["finish"] in ("stop", "length")
    # DeepThink off: no thinking block
    page.goto(f"{srv.url}/?max_tokens=16")
    toggle.click()
    expect(toggle).to_have_attribute("aria-pressed", "false")
    chat.send("Say hi")
    expect(msg.locator(".actions")).to_be_visible(timeout=60_000)
    expect(page.locator("details.thinking")).to_have_count(0)
    # reload: the conversations come back
    page.reload()
    chat.sidebar(True)
    expect(page.locator("#conversations li")).to_have_count(2)
    chat.close()


def test_stop_aborts_on_the_server(browser, srv, size):
    from playwright.sync_api import expect

    idle(srv)
    free = health(srv)["free_blocks"]
    chat = Chat(browser, srv, size, "?ignore_eos=1&seed=1")
    page = chat.page
    chat.send("Tell me a long story")
    expect(page.locator("#stop")).to_be_visible()
    expect(page.locator("#send")).to_be_hidden()
    expect(page.locator(".msg.assistant .reasoning")).not_to_have_text("", timeout=60_000)
    assert health(srv)["running"] >= 1
    page.click("#stop")
    wait_until(lambda: health(srv)["running"] == 0, 10, "the engine to drop the request")
    h = health(srv)
    assert h["requests"] == 0
    assert h["free_blocks"] == free  # its KV blocks are back (prefix-cached ones count as free)
    expect(page.locator(".msg.assistant .notice")).to_have_text("Stopped.")
    expect(page.locator("#send")).to_be_visible()
    (conv,) = chat.conversations()
    stored = wait_until(lambda: len(m := chat.stored(conv["id"])["messages"]) == 2 and m)
    assert stored[1]["finish"] == "abort" and stored[1]["reasoning"]
    # stopped well before the context ran out
    (usage,) = [u for u in srv.store.usage() if u["id"] == chat.key_id]
    assert 0 < usage["completion_tokens"] < srv.gen.max_model_len // 2
    chat.close()


def test_new_chat_mid_stream_keeps_turns_together(browser, srv, size):
    """Two answers stream at once (long, ignore_eos): "New chat" mid-stream, then back to the
    first while both run; each conversation keeps its own question and answer."""
    from playwright.sync_api import expect

    idle(srv)
    chat = Chat(browser, srv, size, "?ignore_eos=1&seed=2")
    page = chat.page
    reasoning = page.locator(".msg.assistant .reasoning")
    chat.send("First question")
    expect(reasoning).not_to_have_text("", timeout=60_000)
    chat.new_chat()
    expect(page.locator(".msg")).to_have_count(0)
    expect(page.locator("#title")).to_have_text("New chat")
    expect(page.locator("#send")).to_be_visible()  # this conversation is not streaming
    chat.send("Second question")
    expect(page.locator(".msg.user .body")).to_have_text(["Second question"])
    expect(reasoning).not_to_have_text("", timeout=60_000)
    assert health(srv)["running"] == 2
    chat.sidebar(True)
    expect(page.locator("#conversations li.live")).to_have_count(2)
    page.locator("#conversations li .open", has_text="First question").click()
    expect(page.locator(".msg.user .body")).to_have_text(["First question"])
    expect(page.locator(".msg.assistant.streaming")).to_have_count(1)
    page.click("#stop")
    expect(page.locator(".msg.assistant .notice")).to_have_text("Stopped.")
    chat.sidebar(True)
    page.locator("#conversations li .open", has_text="Second question").click()
    expect(page.locator(".msg.user .body")).to_have_text(["Second question"])
    page.click("#stop")
    expect(page.locator(".msg.assistant .notice")).to_have_text("Stopped.")
    idle(srv)
    convs = wait_until(lambda: len(c := chat.conversations()) == 2 and c)
    for c in convs:
        msgs = wait_until(lambda c=c: len(m := chat.stored(c["id"])["messages"]) == 2 and m)
        assert msgs[0] == {"role": "user", "content": c["title"]}
        assert msgs[1]["role"] == "assistant" and msgs[1]["finish"] == "abort"
        assert msgs[1]["reasoning"] or msgs[1]["content"]
    assert {c["title"] for c in convs} == {"First question", "Second question"}
    chat.close()


def test_over_quota_key_keeps_its_history(browser, srv, size):
    from playwright.sync_api import expect

    key, rec = srv.store.create_key("spent", quota_tokens=10)
    srv.store.record(rec.id, srv.gen.name, "chat", 8, 40, 0)
    a = srv.store.save_conversation(rec.id, None, "Old chat", SAVED[:2])
    srv.store.save_conversation(rec.id, None, "Another chat", SAVED[:2])
    chat = Chat(browser, srv, size, key=key)
    page = chat.page
    expect(page.locator("#quota")).to_have_text("48 / 10 tokens")
    expect(page.locator("#quota")).to_have_class(re.compile(r"\bspent\b"))
    chat.sidebar(True)
    items = page.locator("#conversations li")
    expect(items).to_have_count(2)
    page.locator("#conversations li .open", has_text="Old chat").click()
    expect(page.locator(".msg.assistant table")).to_have_count(1)
    # rename, then reload: the new title stays
    chat.sidebar(True)
    page.locator(f"#conversations li[data-id='{a}'] button.rename").click()
    page.locator(".rename-input").fill("Renamed chat")
    page.locator(".rename-input").press("Enter")
    expect(items.locator(".open", has_text="Renamed chat")).to_have_count(1)
    page.reload()
    chat.sidebar(True)
    expect(items.locator(".open")).to_have_text(["Another chat", "Renamed chat"])
    expect(page.locator("#title")).to_have_text("Renamed chat")
    # a new question is refused with the quota's message, shown in the chat
    chat.sidebar(False)
    chat.send("One more?")
    expect(page.locator(".msg.assistant .notice").last).to_contain_text("quota", timeout=10_000)
    # delete (confirmed), then reload: gone
    chat.sidebar(True)
    page.once("dialog", lambda d: d.accept())
    page.locator("#conversations li", has_text="Another chat").locator("button.delete").click()
    expect(items).to_have_count(1)
    page.reload()
    chat.sidebar(True)
    expect(items.locator(".open")).to_have_text(["Renamed chat"])
    assert [c["title"] for c in srv.store.conversations(rec.id)] == ["Renamed chat"]
    chat.close()


def test_ime_composition_does_not_send(browser, srv, size):
    from playwright.sync_api import expect

    chat = Chat(browser, srv, size)
    page = chat.page
    page.focus("#input")
    cdp = chat.ctx.new_cdp_session(page)
    # a real composition through Chromium's IME path: Enter keydowns then carry isComposing
    cdp.send("Input.imeSetComposition", {"text": "ni", "selectionStart": 2, "selectionEnd": 2})
    page.keyboard.press("Enter")
    # what Safari sends: keyCode 229 on the Enter that ends the composition
    page.locator("#input").dispatch_event("keydown", {"key": "Enter", "keyCode": 229})
    cdp.send("Input.insertText", {"text": "你好"})  # the composition is committed
    expect(page.locator(".msg")).to_have_count(0)
    assert "你好" in page.input_value("#input")
    # Shift+Enter breaks the line, Enter sends
    page.keyboard.press("Shift+Enter")
    page.keyboard.type("again")
    expect(page.locator(".msg")).to_have_count(0)
    page.keyboard.press("Enter")
    expect(page.locator(".msg.user .body")).to_contain_text("again")
    expect(page.locator(".msg.user .body")).to_contain_text("你好")
    page.click("#stop")
    chat.close()


def test_history_routes_are_not_model_requests(srv):
    """Sign-in and conversation storage take a valid key only: neither the key's quota nor its
    requests-per-minute applies, and no usage is recorded; model requests still get 402/429."""
    spent, rec = srv.store.create_key("spent", quota_tokens=5, rpm=2)
    srv.store.record(rec.id, srv.gen.name, "chat", 5, 5, 0)
    with httpx.Client(base_url=srv.url, headers={"Authorization": f"Bearer {spent}"}) as c:
        for _ in range(3):
            me = c.get("/web/me").json()
            assert (me["tokens_used"], me["quota_tokens"], me["exhausted"]) == (10, 5, True)
            cid = c.post("/web/conversations", json={"title": "t", "messages": []}).json()["id"]
            assert c.put(f"/web/conversations/{cid}", json={"title": "t", "messages": Q}).is_success
            assert c.patch(f"/web/conversations/{cid}", json={"title": "u"}).is_success
            assert c.get(f"/web/conversations/{cid}").json()["title"] == "u"
            assert c.get("/web/conversations").is_success
            assert c.delete(f"/web/conversations/{cid}").is_success
        assert c.get("/v1/models").status_code == 402
        assert c.patch("/web/conversations/nope", json={"title": "x"}).status_code == 404
        assert c.patch(f"/web/conversations/{cid}", json={"title": ""}).status_code == 422
    (u,) = [u for u in srv.store.usage() if u["id"] == rec.id]
    assert u["requests"] == 1  # only the usage recorded above
    limited, _ = srv.store.create_key("rpm", rpm=2)
    with httpx.Client(base_url=srv.url, headers={"Authorization": f"Bearer {limited}"}) as c:
        for _ in range(5):
            assert c.get("/web/conversations").is_success
        assert [c.get("/v1/models").status_code for _ in range(3)] == [200, 200, 429]
    assert httpx.get(f"{srv.url}/web/me").status_code == 401
    assert (
        httpx.get(
            f"{srv.url}/web/conversations", headers={"Authorization": "Bearer sk-r1-0-bad"}
        ).status_code
        == 401
    )
