// Answers as Markdown -> sanitized HTML. markdown-it (tables, raw HTML off), KaTeX through
// markdown-it-texmath ($...$, $$...$$, \(...\), \[...\] on their own lines) plus two rules of
// ours for what R1 models write: \[...\] inside a paragraph and a bare \boxed{...}.
// highlight.js colours fenced code; DOMPurify sanitizes the whole result. The libraries are the
// vendored globals loaded by index.html (vendor/, see tools/update_web_vendor.sh).
const { markdownit, katex, texmath, hljs, DOMPurify } = window;

function highlight(code, lang) {
  let html;
  try {
    html = lang && hljs.getLanguage(lang)
      ? hljs.highlight(code, { language: lang, ignoreIllegals: true }).value
      : hljs.highlightAuto(code).value;
  } catch (e) {
    html = md.utils.escapeHtml(code);
  }
  const cls = lang ? " language-" + md.utils.escapeHtml(lang) : "";
  return '<pre><code class="hljs' + cls + '">' + html + "</code></pre>";
}

const md = markdownit({ html: false, linkify: true, highlight });
md.use(texmath, {
  engine: katex,
  delimiters: ["dollars", "brackets"],
  katexOptions: { throwOnError: false, strict: "ignore" },
});

function tex(src, display) {
  return katex.renderToString(src, { throwOnError: false, strict: "ignore", displayMode: display });
}

// index just past the brace that closes the one at `open`, or -1
function closeBrace(s, open) {
  let depth = 0;
  for (let i = open; i < s.length; i++) {
    if (s[i] === "\\") i++;
    else if (s[i] === "{") depth++;
    else if (s[i] === "}" && --depth === 0) return i + 1;
  }
  return -1;
}

// \[...\] mid-paragraph (display) and a bare \boxed{...} (inline), before markdown escapes
md.inline.ruler.before("escape", "r1_math", (state, silent) => {
  const s = state.src, pos = state.pos;
  let content, display, end;
  if (s.startsWith("\\[", pos)) {
    const close = s.indexOf("\\]", pos + 2);
    if (close < 0) return false;
    content = s.slice(pos + 2, close); display = true; end = close + 2;
  } else if (s.startsWith("\\boxed{", pos)) {
    end = closeBrace(s, pos + 6);
    if (end < 0) return false;
    content = s.slice(pos, end); display = false;
  } else return false;
  if (!silent) {
    const t = state.push("r1_math", "math", 0);
    t.content = content; t.meta = { display };
  }
  state.pos = end;
  return true;
});
md.renderer.rules.r1_math = (tokens, i) => tex(tokens[i].content, tokens[i].meta.display);

DOMPurify.addHook("afterSanitizeAttributes", (node) => {
  if (node.tagName === "A") {
    node.setAttribute("target", "_blank");
    node.setAttribute("rel", "noopener noreferrer");
  }
});

// KaTeX's MathML (for screen readers) keeps its TeX source in <annotation>
const PURIFY = { ADD_TAGS: ["semantics", "annotation"], ADD_ATTR: ["encoding"] };

export function renderMarkdown(src) {
  return DOMPurify.sanitize(md.render(src || ""), PURIFY);
}

// Render `src` into `el`, then give each code block a header with its language and Copy.
export function renderInto(el, src, copy) {
  el.innerHTML = renderMarkdown(src);
  for (const pre of el.querySelectorAll("pre")) {
    const code = pre.querySelector("code");
    const lang = [...(code ? code.classList : [])].find((c) => c.startsWith("language-"));
    const head = document.createElement("div");
    head.className = "code-head";
    const name = document.createElement("span");
    name.textContent = lang ? lang.slice(9) : "code";
    const btn = document.createElement("button");
    btn.type = "button";
    btn.className = "copy-code";
    btn.textContent = "Copy";
    btn.setAttribute("aria-label", "Copy code");
    btn.addEventListener("click", () => copy(code ? code.textContent : pre.textContent, btn));
    head.append(name, btn);
    pre.before(head);
    const box = document.createElement("div");
    box.className = "code-block";
    head.before(box);
    box.append(head, pre);
  }
}
