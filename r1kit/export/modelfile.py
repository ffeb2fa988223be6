"""`r1kit export ollama`: the GGUF plus an Ollama Modelfile, and the `ollama create` line.

The TEMPLATE is the model's own format in Ollama's Go template syntax: r1kit's chat template
(`r1kit.chat.CHAT_TEMPLATE`), or for a model trained in the R1-Zero format its plain-text
template (`r1kit.chat.R1ZERO_CHAT_TEMPLATE`). Differences forced by Ollama, none of which change the tokens of a usual conversation:
- no BOS text: Ollama's tokenizer adds it (the GGUF says `add_bos_token`), where r1kit's Jinja
  writes `{{ bos_token }}` and tokenizes without special tokens;
- earlier assistant turns: Ollama keeps their reasoning apart (`.Thinking`), so the template
  renders `.Content` alone, which is what r1kit's template keeps after `</think>`;
- a last assistant message is a prefill to continue (Ollama's convention), so it has no
  end-of-sentence token;
- `think: false` closes the think block at once (`<think>\\n</think>\\n\\n`), as r1kit's server
  does. Ollama finds the think tags from the `{{ .Thinking }}` block and, because the prompt ends
  with `<think>`, reads the output as reasoning until `</think>`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from r1kit.chat import ASSISTANT, BOS, EOS, R1_ZERO_TEMPLATE, R1ZERO_MARKER, USER
from r1kit.errors import R1kitError
from r1kit.export.gguf import check_outtype, export_gguf, model_name
from r1kit.export.info import gguf_summary

# Go text/template, Ollama's variables: .Messages (Role, Content, Thinking), .IsThinkSet, .Think.
# `{{-` trims the whitespace before an action; it is used only where no text is meant to be.
OLLAMA_TEMPLATE = (
    "{{- range $i, $_ := .Messages }}"
    "{{- $last := eq (len (slice $.Messages $i)) 1 }}"
    '{{- if eq .Role "system" }}{{ .Content }}'
    f'{{{{- else if eq .Role "user" }}}}{USER}{{{{ .Content }}}}'
    f'{{{{- else if eq .Role "assistant" }}}}{ASSISTANT}'
    "{{- if and $last .Thinking }}<think>\n{{ .Thinking }}\n</think>\n\n{{ end }}"
    f"{{{{ .Content }}}}{{{{ if not $last }}}}{EOS}{{{{ end }}}}"
    "{{- end }}"
    f'{{{{- if and $last (ne .Role "assistant") }}}}{ASSISTANT}<think>\n'
    "{{ if and $.IsThinkSet (not $.Think) }}</think>\n\n{{ end }}"
    "{{- end }}"
    "{{- end }}"
)
# The R1-Zero format's template (`r1kit.chat.R1ZERO_CHAT_TEMPLATE`) in the same syntax. Go's
# text/template has no `trim`: message text goes in as sent, where the Jinja strips it.
OLLAMA_R1ZERO_TEMPLATE = (
    R1_ZERO_TEMPLATE.split("User:")[0].rstrip("\n") + '{{ "\\n" }}'
    "{{- range $i, $_ := .Messages }}"
    "{{- $last := eq (len (slice $.Messages $i)) 1 }}"
    '{{- if eq .Role "system" }}{{ .Content }}{{ "\\n" }}'
    '{{- else if eq .Role "user" }}User: {{ .Content }}{{ "\\n" }}'
    '{{- else if eq .Role "assistant" }}Assistant: <think>'
    "{{- if $last }} {{ .Thinking }} </think> {{ .Content }}"
    '{{- else }} </think> {{ .Content }}{{ "\\n" }}{{ end }}'
    "{{- end }}"
    '{{- if and $last (ne .Role "assistant") }}Assistant: <think>'
    "{{- if and $.IsThinkSet (not $.Think) }} </think>{{ end }}"
    "{{- end }}"
    "{{- end }}"
)
STOPS = (BOS, EOS, USER, ASSISTANT)  # DeepSeek-R1's stop set in Ollama's library
OLLAMA_DEFAULT_CTX = 4096  # Ollama's default num_ctx; a model with less context sets its own


@dataclass
class OllamaExport:
    gguf: Path
    modelfile: Path
    create_cmd: str
    r1_template: bool  # False: the tokenizer's template is not R1-style; Ollama infers one


def build_modelfile(
    gguf_file: str, context_length: int, chat_template: str | None, source: str = ""
) -> tuple[str, bool]:
    """The Modelfile text (FROM, TEMPLATE, stop/temperature/top_p/num_ctx) and whether the
    R1 TEMPLATE was used: the R1-Zero one for a model in r1kit's R1-Zero format, the chat one for
    tokenizers whose chat template speaks R1's markers."""
    r1zero = bool(chat_template) and R1ZERO_MARKER in chat_template
    r1 = r1zero or (bool(chat_template) and USER in chat_template and ASSISTANT in chat_template)
    lines = [f"# made by r1kit export ollama{f' from {source}' if source else ''}"]
    lines.append(f"FROM ./{gguf_file}")
    if r1zero:
        lines.append(f'TEMPLATE """{OLLAMA_R1ZERO_TEMPLATE}"""')
    elif r1:
        lines.append(f'TEMPLATE """{OLLAMA_TEMPLATE}"""')
        lines += [f'PARAMETER stop "{s}"' for s in STOPS]
    lines += ["PARAMETER temperature 0.6", "PARAMETER top_p 0.95"]
    if context_length < OLLAMA_DEFAULT_CTX:
        lines.append(f"PARAMETER num_ctx {context_length}")
    return "\n".join(lines) + "\n", r1


def export_ollama(
    model: str | None = None,
    outtype: str = "f16",
    out: str | Path | None = None,
    name: str | None = None,
    template: str = "auto",
) -> OllamaExport:
    """Write OUT/NAME-OUTTYPE.gguf and OUT/Modelfile (default OUT: ./NAME-ollama), both in the
    model's own prompt format or the one `template` names."""
    check_outtype(outtype)
    name = name or model_name(model)
    out_dir = Path(out) if out is not None else Path(f"{name}-ollama")
    if out_dir.suffix == ".gguf" or (out_dir.exists() and not out_dir.is_dir()):
        # checked before writing: the GGUF would go to that path, over the file there
        raise R1kitError(f"--out {out_dir}: ollama writes a directory (GGUF + Modelfile)")
    res = export_gguf(model, outtype, out_dir, name, template)
    meta = gguf_summary(res.path)
    text, r1 = build_modelfile(
        res.path.name,
        meta["context_length"],
        meta.get("chat_template"),
        model or "the embedded model",
    )
    mf = out_dir / "Modelfile"
    mf.write_text(text, encoding="utf-8")
    return OllamaExport(res.path, mf, f"ollama create {ollama_tag(name)} -f {mf}", r1)


def ollama_tag(name: str) -> str:
    """The model name Ollama is told to create (and `r1kit serve FILE.gguf` shows)."""
    return name.lower().replace("_", "-")
