// r1kit web chat: sign in with a key, DeepThink switch, streamed answers, conversations kept by
// the server (SQLite, /web/conversations). Each stream is bound to its conversation object, not
// to the page: switching conversations or starting a new one mid-stream keeps filling the one
// that asked, which is saved with its question before the answer starts and again when it ends.
import { renderInto } from "./render.js";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
// reproducible demos and tests: ?seed=N&max_tokens=N&ignore_eos=1 go into every request
const extra = {};
for (const k of ["seed", "max_tokens"]) if (params.has(k)) extra[k] = parseInt(params.get(k), 10);
if (params.get("ignore_eos") === "1") extra.ignore_eos = true;

let cfg = null, me = null, key = localStorage.getItem("r1kit-key") || "";
let think = localStorage.getItem("r1kit-deepthink") !== "off";
let list = [];                  // [{id, title, updated}] as the server lists them
const streaming = new Map();    // conversation id -> its conversation object, while answering
const els = new WeakMap();      // message object -> its element on screen
let cur = blank();              // the conversation on screen

function blank() { return { id: null, title: "New chat", messages: [] }; }

// ---------------------------------------------------------------- server
function headers() {
  const h = { "Content-Type": "application/json" };
  if (key) h["Authorization"] = "Bearer " + key;
  return h;
}
async function api(path, opts) {
  const r = await fetch(path, Object.assign({ headers: headers() }, opts || {}));
  const body = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error((body.error && body.error.message) || "HTTP " + r.status);
  return body;
}
// what the server keeps: the answer being streamed is saved once it ends
function payload(c) {
  const messages = c.messages.filter((m) => m.role === "user" || m.finish);
  return JSON.stringify({ title: c.title, messages });
}
async function save(c) {
  if (c.deleted) return;
  if (c.id) await api("/web/conversations/" + c.id, { method: "PUT", body: payload(c) });
  else c.id = (await api("/web/conversations", { method: "POST", body: payload(c) })).id;
}

// ---------------------------------------------------------------- sign-in
async function start() {
  cfg = await api("/web/config");
  $("model-name").textContent = cfg.model;
  if (cfg.auth && !key) return showSignin("");
  try { me = await api("/web/me"); } catch (e) { return showSignin(e.message); }
  $("signin").hidden = true; $("app").hidden = false;
  showQuota();
  setThink(think);
  await refreshList();
  const id = location.hash.slice(1);
  if (id) await openConversation(id); else newChat();
  $("input").focus();
}
function showSignin(msg) {
  $("app").hidden = true; $("signin").hidden = false; $("signin-error").textContent = msg;
  $("key").focus();
}
function showQuota() {
  const parts = [];
  if (me.quota_tokens != null) parts.push(`${me.tokens_used} / ${me.quota_tokens} tokens`);
  if (me.credit != null) parts.push(`${me.spent.toFixed(2)} / ${me.credit} ${me.currency}`);
  $("quota").textContent = parts.join(", ");
  $("quota").classList.toggle("spent", me.exhausted);
  $("quota").title = me.exhausted ? "Spent: conversations can be read, not continued" : "";
}
$("signin-form").addEventListener("submit", (e) => {
  e.preventDefault();
  key = $("key").value.trim();
  localStorage.setItem("r1kit-key", key);
  start();
});
$("signout").addEventListener("click", () => {
  for (const c of streaming.values()) c.stream.ctrl.abort();
  localStorage.removeItem("r1kit-key"); key = ""; showSignin("");
});

function setThink(on) {
  think = on;
  $("deepthink").setAttribute("aria-pressed", on ? "true" : "false");
  localStorage.setItem("r1kit-deepthink", on ? "on" : "off");
}
$("deepthink").addEventListener("click", () => setThink(!think));

// ---------------------------------------------------------------- drawer (narrow screens)
function drawer(open) {
  const was = document.body.classList.contains("drawer-open");
  document.body.classList.toggle("drawer-open", open);
  $("backdrop").hidden = !open;
  $("menu").setAttribute("aria-expanded", open ? "true" : "false");
  if (open) $("new-chat").focus();
  else if (was && document.activeElement === document.body) $("menu").focus();
}
$("menu").addEventListener("click", () => drawer(!document.body.classList.contains("drawer-open")));
$("backdrop").addEventListener("click", () => drawer(false));
document.addEventListener("keydown", (e) => {
  if (e.key === "Escape" && document.body.classList.contains("drawer-open")) drawer(false);
});

// ---------------------------------------------------------------- conversation list
async function refreshList() {
  list = (await api("/web/conversations")).data;
  const ul = $("conversations");
  ul.innerHTML = "";
  for (const item of list) ul.appendChild(listItem(item));
}
function iconButton(cls, label, text, onClick) {
  const b = document.createElement("button");
  b.type = "button"; b.className = "icon " + cls; b.textContent = text;
  b.setAttribute("aria-label", label); b.title = label;
  b.addEventListener("click", onClick);
  return b;
}
function listItem(item) {
  const li = document.createElement("li");
  li.dataset.id = item.id;
  if (item.id === cur.id) li.classList.add("active");
  if (streaming.has(item.id)) li.classList.add("live");
  const open = document.createElement("button");
  open.type = "button"; open.className = "open"; open.textContent = item.title;
  if (item.id === cur.id) open.setAttribute("aria-current", "true");
  open.addEventListener("click", () => { openConversation(item.id); drawer(false); });
  li.append(open,
    iconButton("rename", "Rename " + item.title, "\u270E", () => rename(li, item)),
    iconButton("delete", "Delete " + item.title, "\u2715", () => remove(item)));
  return li;
}
function rename(li, item) {
  const input = document.createElement("input");
  input.className = "rename-input"; input.value = item.title; input.maxLength = 200;
  input.setAttribute("aria-label", "New title");
  li.replaceChildren(input);
  input.focus(); input.select();
  let done = false;
  const finish = async (ok) => {
    if (done) return;
    done = true;
    const title = input.value.trim();
    if (ok && title && title !== item.title) {
      await api("/web/conversations/" + item.id, { method: "PATCH", body: JSON.stringify({ title }) });
      for (const c of [cur, streaming.get(item.id)]) if (c && c.id === item.id) c.title = title;
      if (cur.id === item.id) $("title").textContent = title;
    }
    await refreshList();
  };
  input.addEventListener("keydown", (e) => {
    if (e.isComposing || e.keyCode === 229) return;
    if (e.key === "Enter") { e.preventDefault(); finish(true); }
    if (e.key === "Escape") { e.preventDefault(); e.stopPropagation(); finish(false); }
  });
  input.addEventListener("blur", () => finish(true));
}
async function remove(item) {
  if (!confirm(`Delete "${item.title}"?`)) return;
  const c = streaming.get(item.id);
  if (c) { c.deleted = true; c.stream.ctrl.abort(); }
  await api("/web/conversations/" + item.id, { method: "DELETE" });
  if (cur.id === item.id) newChat();
  await refreshList();
}

async function openConversation(id) {
  let c = streaming.get(id);
  if (!c) {
    try { c = await api("/web/conversations/" + encodeURIComponent(id)); } catch (e) { return newChat(); }
  }
  show(c);
}
function newChat() {
  show(blank());
  drawer(false);
  $("input").focus();
}
$("new-chat").addEventListener("click", newChat);
$("new-chat-top").addEventListener("click", newChat);

function show(c) {
  cur = c;
  if (c.id) history.replaceState(null, "", "#" + c.id);
  else history.replaceState(null, "", location.pathname + location.search);
  $("title").textContent = c.title;
  $("messages").innerHTML = "";
  c.messages.forEach((m) => $("messages").appendChild(messageEl(c, m)));
  scrollDown(true);
  controls();
  for (const li of $("conversations").children) {
    const on = li.dataset.id === c.id;
    li.classList.toggle("active", on);
    const b = li.querySelector(".open");
    if (b) { if (on) b.setAttribute("aria-current", "true"); else b.removeAttribute("aria-current"); }
  }
}

// ---------------------------------------------------------------- messages
function messageEl(c, m) {
  const div = document.createElement("div");
  div.className = "msg " + m.role;
  els.set(m, div);
  if (m.role === "user") {
    const body = document.createElement("div");
    body.className = "body"; body.textContent = m.content;
    const acts = document.createElement("div");
    acts.className = "actions";
    acts.append(iconButton("edit", "Edit message", "Edit", () => edit(c, m)),
      iconButton("copy", "Copy message", "Copy", (e) => copy(m.content, e.currentTarget)));
    div.append(body, acts);
  } else {
    const answer = document.createElement("div");
    answer.className = "body answer";
    const notice = document.createElement("p");
    notice.className = "notice";
    const acts = document.createElement("div");
    acts.className = "actions";
    acts.append(iconButton("copy", "Copy answer", "Copy", (e) => copy(m.content, e.currentTarget)),
      iconButton("regenerate", "Regenerate answer", "Regenerate", () => regenerate(c, m)));
    div.append(answer, notice, acts);
    paint(c, m, true);
  }
  return div;
}

function thoughtLabel(m) {
  if (m.thought_s == null) return "Thinking\u2026";
  const n = Math.max(1, Math.round(m.thought_s));
  return "Thought for " + n + (n === 1 ? " second" : " seconds");
}
function noticeOf(m) {
  if (m.error) return "Error: " + m.error;
  const unclosed = m.think !== false && m.reasoning && !m.content;
  if (m.finish === "abort") return "Stopped.";
  if (m.finish === "length" && unclosed)
    return "The length limit cut the reasoning before it closed: there is no answer.";
  if (m.finish === "length") return "The answer was cut off by the length limit.";
  if (m.finish && unclosed) return "The reasoning never closed: the model gave no answer.";
  return "";
}

// Bring an assistant message's element up to date (a no-op when it is not on screen).
function paint(c, m, fresh) {
  const div = els.get(m);
  if (!div || !(fresh || div.isConnected)) return;
  let d = div.querySelector("details.thinking");
  if (m.reasoning && !d) {
    d = document.createElement("details");
    d.className = "thinking";
    d.open = !m.finish && !m.content;  // open while thinking, folded once the answer starts
    d.append(document.createElement("summary"), document.createElement("div"));
    d.lastChild.className = "reasoning";
    div.prepend(d);
  }
  if (d) {
    // fold once, when the answer first shows: also when the answer and the end of the stream
    // arrive before the next frame paints (the stream is gone by then)
    if (m.content && d.dataset.folded !== "1") {
      d.open = false;
      d.dataset.folded = "1";
    }
    d.firstChild.textContent = thoughtLabel(m);
    d.lastChild.textContent = m.reasoning;
  }
  renderInto(div.querySelector(".answer"), m.content || "", copy);
  const note = noticeOf(m);
  const p = div.querySelector(".notice");
  p.textContent = note; p.hidden = !note;
  p.setAttribute("role", m.error ? "alert" : "note");
  const live = !m.finish;
  div.classList.toggle("streaming", live);
  const last = c.messages[c.messages.length - 1] === m;
  div.querySelector(".regenerate").hidden = live || !last;
  div.querySelector(".actions").hidden = live;
}
const pending = new Map();  // message -> its conversation, to repaint at the next frame
function schedule(c, m) {  // one repaint per message per frame, however many chunks arrive
  if (!pending.size) requestAnimationFrame(() => {
    for (const [mm, cc] of pending) paint(cc, mm);
    pending.clear();
    scrollDown(false);
  });
  pending.set(m, c);
}
function scrollDown(force) {
  const el = $("messages");
  if (force || el.scrollHeight - el.scrollTop - el.clientHeight < 120) el.scrollTop = el.scrollHeight;
}

async function copy(text, btn) {
  try {
    await navigator.clipboard.writeText(text);
  } catch (e) {  // plain http on a LAN address has no clipboard API
    const t = document.createElement("textarea");
    t.value = text; document.body.appendChild(t); t.select();
    document.execCommand("copy"); t.remove();
  }
  if (btn) {
    const was = btn.textContent;
    btn.textContent = "Copied";
    setTimeout(() => (btn.textContent = was), 1200);
  }
}

function edit(c, m) {
  if (c.stream) return;
  const div = els.get(m);
  const box = document.createElement("div");
  box.className = "edit";
  const ta = document.createElement("textarea");
  ta.value = m.content; ta.rows = 3; ta.setAttribute("aria-label", "Edit message");
  const ok = document.createElement("button");
  ok.type = "button"; ok.className = "primary"; ok.textContent = "Send";
  const cancel = document.createElement("button");
  cancel.type = "button"; cancel.textContent = "Cancel";
  const bar = document.createElement("div");
  bar.className = "bar"; bar.append(cancel, ok);
  box.append(ta, bar);
  div.replaceChildren(box);
  ta.focus();
  cancel.addEventListener("click", () => show(c));
  const resend = () => {
    const text = ta.value.trim();
    if (!text) return;
    c.messages = c.messages.slice(0, c.messages.indexOf(m));  // later turns are replaced
    show(c);
    ask(c, text);
  };
  ok.addEventListener("click", resend);
  ta.addEventListener("keydown", (e) => {
    if (e.isComposing || e.keyCode === 229) return;
    if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); resend(); }
    if (e.key === "Escape") show(c);
  });
}
function regenerate(c, m) {
  if (c.stream) return;
  c.messages = c.messages.slice(0, c.messages.indexOf(m));
  show(c);
  answer(c);
}

// ---------------------------------------------------------------- asking
function ask(c, text) {
  const user = { role: "user", content: text };
  c.messages.push(user);
  if (c.title === "New chat") c.title = text.slice(0, 60);
  if (c === cur) {
    for (const b of $("messages").querySelectorAll(".regenerate")) b.hidden = true;
    $("messages").appendChild(messageEl(c, user));
    $("title").textContent = c.title;
  }
  return answer(c);
}

async function answer(c) {
  const msg = { role: "assistant", content: "", reasoning: "", thought_s: null, think, finish: null };
  const msgs = c.messages
    .filter((m) => !(m.role === "assistant" && m.error))
    .map((m) => ({ role: m.role, content: m.content || "" }));
  c.messages.push(msg);
  const ctrl = new AbortController();
  c.stream = { ctrl, msg };
  if (c === cur) { $("messages").appendChild(messageEl(c, msg)); scrollDown(true); }
  controls();
  const t0 = performance.now();
  try {
    await save(c);  // the question is kept (and the conversation has an id) before any answer
    streaming.set(c.id, c);
    if (c === cur) history.replaceState(null, "", "#" + c.id);
    refreshList();
    const req = { model: cfg.model, messages: msgs, stream: true, think, ...extra };
    const r = await fetch("/v1/chat/completions",
      { method: "POST", headers: headers(), body: JSON.stringify(req), signal: ctrl.signal });
    if (!r.ok) {
      const b = await r.json().catch(() => ({}));
      throw new Error((b.error && b.error.message) || "HTTP " + r.status);
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
        for (const ch of JSON.parse(ev.slice(6)).choices || []) {
          const d = ch.delta || {};
          if (d.reasoning_content) msg.reasoning += d.reasoning_content;
          if (d.content) {
            if (msg.reasoning && msg.thought_s == null) msg.thought_s = (performance.now() - t0) / 1000;
            msg.content += d.content;
          }
          if (ch.finish_reason) msg.finish = ch.finish_reason;
        }
        schedule(c, msg);
        if (c === cur) controls();
      }
    }
  } catch (e) {
    if (e.name === "AbortError") msg.finish = "abort";
    else { msg.error = e.message; msg.finish = "error"; }
  }
  msg.finish = msg.finish || "stop";
  if (msg.reasoning && msg.thought_s == null) msg.thought_s = (performance.now() - t0) / 1000;
  delete c.stream;
  streaming.delete(c.id);
  paint(c, msg);
  controls();
  try { await save(c); await refreshList(); } catch (e) { /* signed out or deleted meanwhile */ }
  if (me.quota_tokens != null || me.credit != null) { me = await api("/web/me").catch(() => me); showQuota(); }
}

// Send or Stop, and what the conversation on screen is doing.
function controls() {
  const s = cur.stream;
  $("send").hidden = !!s;
  $("stop").hidden = !s;
  let status = "";
  if (s) status = s.msg.content || !s.msg.think ? "Answering\u2026" : "Thinking\u2026";
  $("status").textContent = status;
}
$("stop").addEventListener("click", () => { if (cur.stream) cur.stream.ctrl.abort(); });

$("composer").addEventListener("submit", (e) => {
  e.preventDefault();
  const text = $("input").value.trim();
  if (!text || cur.stream) return;
  $("input").value = "";
  ask(cur, text);
});
// Enter sends, Shift+Enter breaks the line; neither while an IME composes (Chinese, Japanese):
// Chromium and Firefox flag those keydowns isComposing, Safari sends keyCode 229.
$("input").addEventListener("keydown", (e) => {
  if (e.key !== "Enter" || e.shiftKey || e.isComposing || e.keyCode === 229) return;
  e.preventDefault();
  $("composer").requestSubmit();
});
start();
