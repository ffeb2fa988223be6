// r1kit web chat: sign in with a key, DeepThink switch, streaming answers, conversations kept
// by the server (SQLite). No dependencies; markdown.js renders answers.
(function () {
  const $ = (id) => document.getElementById(id);
  const params = new URLSearchParams(location.search);
  const seed = params.has("seed") ? parseInt(params.get("seed"), 10) : null;  // reproducible demos
  let cfg = null, key = localStorage.getItem("r1kit-key") || "";
  let conv = { id: null, title: "New chat", messages: [] };
  let think = localStorage.getItem("r1kit-deepthink") !== "off";

  function headers() {
    const h = { "Content-Type": "application/json" };
    if (key) h["Authorization"] = "Bearer " + key;
    return h;
  }
  async function api(path, opts) {
    const r = await fetch(path, Object.assign({ headers: headers() }, opts || {}));
    const body = await r.json().catch(() => ({}));
    if (!r.ok) throw new Error((body.error && body.error.message) || ("HTTP " + r.status));
    return body;
  }

  async function start() {
    cfg = await api("/web/config");
    $("model-name").textContent = cfg.model;
    if (cfg.auth && !key) return showSignin("");
    try { await api("/v1/models"); } catch (e) { return showSignin(e.message); }
    $("signin").hidden = true; $("app").hidden = false;
    setThink(think);
    await refreshList();
    const id = location.hash.slice(1);
    if (id) await openConversation(id); else newChat();
  }
  function showSignin(msg) {
    $("app").hidden = true; $("signin").hidden = false; $("signin-error").textContent = msg;
  }
  $("signin-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    key = $("key").value.trim();
    localStorage.setItem("r1kit-key", key);
    start();
  });
  $("signout").addEventListener("click", (e) => {
    e.preventDefault(); localStorage.removeItem("r1kit-key"); key = ""; showSignin("");
  });

  function setThink(on) {
    think = on;
    $("deepthink").setAttribute("aria-pressed", on ? "true" : "false");
    localStorage.setItem("r1kit-deepthink", on ? "on" : "off");
  }
  $("deepthink").addEventListener("click", () => setThink(!think));

  async function refreshList() {
    const { data } = await api("/web/conversations");
    const ul = $("conversations");
    ul.innerHTML = "";
    for (const c of data) {
      const li = document.createElement("li");
      li.textContent = c.title;
      li.dataset.id = c.id;
      if (c.id === conv.id) li.className = "active";
      li.addEventListener("click", () => openConversation(c.id));
      ul.appendChild(li);
    }
  }
  async function openConversation(id) {
    try { conv = await api("/web/conversations/" + encodeURIComponent(id)); }
    catch (e) { return newChat(); }
    location.hash = conv.id;
    $("messages").innerHTML = "";
    for (const m of conv.messages) renderMessage(m);
    refreshList();
  }
  function newChat() {
    conv = { id: null, title: "New chat", messages: [] };
    history.replaceState(null, "", location.pathname + location.search);
    $("messages").innerHTML = "";
    refreshList();
  }
  $("new-chat").addEventListener("click", newChat);

  function renderMessage(m) {
    const div = document.createElement("div");
    div.className = "msg " + m.role;
    const body = document.createElement("div");
    body.className = "body";
    if (m.role === "user") {
      body.textContent = m.content;
    } else {
      if (m.reasoning) {
        const d = document.createElement("details");
        d.className = "thinking"; d.open = true;
        d.innerHTML = "<summary></summary><div class=\"reasoning\"></div>";
        d.querySelector("summary").textContent = thoughtLabel(m);
        d.querySelector(".reasoning").textContent = m.reasoning;
        div.appendChild(d);
      }
      body.className = "body answer";
      body.innerHTML = window.renderMarkdown(m.content || "");
    }
    div.appendChild(body);
    $("messages").appendChild(div);
    $("messages").scrollTop = $("messages").scrollHeight;
    return div;
  }
  function thoughtLabel(m) {
    if (m.thought_s == null) return "Thinking...";
    const n = Math.max(1, Math.round(m.thought_s));
    return "Thought for " + n + (n === 1 ? " second" : " seconds");
  }

  async function send(text) {
    const user = { role: "user", content: text };
    conv.messages.push(user);
    renderMessage(user);
    if (conv.title === "New chat") conv.title = text.slice(0, 60);
    const msg = { role: "assistant", content: "", reasoning: "", thought_s: null };
    const div = renderMessage(msg);
    const history = conv.messages.map((m) => ({ role: m.role, content: m.content || "" }));
    const req = { model: cfg.model, messages: history, stream: true, think: think };
    if (seed !== null && !isNaN(seed)) req.seed = seed;
    $("send").disabled = true; $("status").textContent = think ? "Thinking..." : "Answering...";
    const t0 = performance.now();
    let tAnswer = null;
    try {
      const r = await fetch("/v1/chat/completions", { method: "POST", headers: headers(), body: JSON.stringify(req) });
      if (!r.ok) {
        const b = await r.json().catch(() => ({}));
        throw new Error((b.error && b.error.message) || ("HTTP " + r.status));
      }
      const reader = r.body.getReader(), dec = new TextDecoder();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += dec.decode(value, { stream: true });
        let i;
        while ((i = buf.indexOf("\n\n")) >= 0) {
          const ev = buf.slice(0, i); buf = buf.slice(i + 2);
          if (!ev.startsWith("data: ") || ev === "data: [DONE]") continue;
          const chunk = JSON.parse(ev.slice(6));
          for (const ch of chunk.choices || []) {
            const d = ch.delta || {};
            if (d.reasoning_content) msg.reasoning += d.reasoning_content;
            if (d.content) {
              if (tAnswer === null) tAnswer = performance.now();
              msg.content += d.content;
            }
          }
          update(div, msg);
        }
      }
    } catch (e) {
      msg.content = msg.content || "**Error:** " + e.message;
    }
    msg.thought_s = msg.reasoning ? ((tAnswer || performance.now()) - t0) / 1000 : null;
    update(div, msg);
    conv.messages.push(msg);
    $("send").disabled = false; $("status").textContent = "";
    await save();
  }
  function update(div, msg) {
    let d = div.querySelector("details.thinking");
    if (msg.reasoning && !d) {
      d = document.createElement("details");
      d.className = "thinking"; d.open = true;
      d.innerHTML = "<summary></summary><div class=\"reasoning\"></div>";
      div.insertBefore(d, div.firstChild);
    }
    if (d) {
      d.querySelector("summary").textContent = thoughtLabel(msg);
      d.querySelector(".reasoning").textContent = msg.reasoning;
    }
    div.querySelector(".answer").innerHTML = window.renderMarkdown(msg.content);
    $("messages").scrollTop = $("messages").scrollHeight;
  }
  async function save() {
    const body = JSON.stringify({ title: conv.title, messages: conv.messages });
    if (conv.id) await api("/web/conversations/" + conv.id, { method: "PUT", body });
    else {
      conv.id = (await api("/web/conversations", { method: "POST", body })).id;
      location.hash = conv.id;
    }
    await refreshList();
  }

  $("composer").addEventListener("submit", (e) => {
    e.preventDefault();
    const text = $("input").value.trim();
    if (!text || $("send").disabled) return;
    $("input").value = "";
    send(text);
  });
  $("input").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); $("composer").requestSubmit(); }
  });
  start();
})();
