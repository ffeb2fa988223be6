"""`r1kit export ollama`: the Modelfile, and its TEMPLATE rendered by Go's text/template (the
engine Ollama runs templates in) against r1kit's Jinja chat template."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from r1kit.chat import BOS, CHAT_TEMPLATE, R1ZERO_CHAT_TEMPLATE
from r1kit.cli import main
from r1kit.export.modelfile import (
    OLLAMA_R1ZERO_TEMPLATE,
    OLLAMA_TEMPLATE,
    STOPS,
    build_modelfile,
)

# Ollama's template data for a chat: Messages (Role, Content, Thinking), Think, IsThinkSet
GO_RENDER = """package main

import (
	"encoding/json"
	"os"
	"text/template"
)

func main() {
	var in struct {
		Template string
		Cases    []map[string]any
	}
	if err := json.NewDecoder(os.Stdin).Decode(&in); err != nil {
		panic(err)
	}
	t := template.Must(template.New("m").Parse(in.Template))
	out := []string{}
	for _, c := range in.Cases {
		var b []byte
		w := &buf{&b}
		if err := t.Execute(w, c); err != nil {
			panic(err)
		}
		out = append(out, string(b))
	}
	json.NewEncoder(os.Stdout).Encode(out)
}

type buf struct{ b *[]byte }

func (w *buf) Write(p []byte) (int, error) { *w.b = append(*w.b, p...); return len(p), nil }
"""

CONVERSATIONS = [
    [{"role": "user", "content": "What is 2+3?"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
    [
        {"role": "user", "content": "What is 2+3?"},
        {"role": "assistant", "content": "5"},
        {"role": "user", "content": "And 2+4? Думай. 考えて"},
    ],
]


def _jinja(template: str, messages: list[dict], think: bool) -> str:
    """r1kit's prompt (Generator.render, through the model's own template), less the BOS text
    Ollama adds as a token instead."""
    from r1kit.serve.generation import Generator

    gen = Generator.__new__(Generator)  # render() needs only the tokenizer
    gen.tok = _Tok(template)
    return gen.render(messages, think).removeprefix(BOS)


class _Tok:
    """The one thing Generator.render asks of a tokenizer: apply_chat_template, as transformers
    renders it (its sandboxed Jinja environment, the BOS text as `bos_token`)."""

    def __init__(self, template: str) -> None:
        self.chat_template = template

    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=True):
        from transformers.utils.chat_template_utils import render_jinja_template

        out, _ = render_jinja_template(
            conversations=[messages],
            chat_template=self.chat_template,
            add_generation_prompt=add_generation_prompt,
            bos_token=BOS,
        )
        return out[0]


@pytest.mark.skipif(shutil.which("go") is None, reason="needs Go (apt-get install golang-go)")
@pytest.mark.parametrize(
    "jinja, go", [(CHAT_TEMPLATE, OLLAMA_TEMPLATE), (R1ZERO_CHAT_TEMPLATE, OLLAMA_R1ZERO_TEMPLATE)]
)
def test_ollama_template_renders_like_the_models_template(tmp_path, jinja, go):
    """Both formats: the Modelfile's Go TEMPLATE gives the text r1kit's server renders."""
    cases, want = [], []
    for msgs in CONVERSATIONS:
        go_msgs = [{"Role": m["role"], "Content": m["content"], "Thinking": ""} for m in msgs]
        for think_set, think in ((False, True), (True, True), (True, False)):
            cases.append({"Messages": go_msgs, "IsThinkSet": think_set, "Think": think})
            want.append(_jinja(jinja, msgs, think))
    src = tmp_path / "render.go"
    src.write_text(GO_RENDER)
    env = {"GOCACHE": str(tmp_path / "gocache"), "HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    res = subprocess.run(
        ["go", "run", str(src)],
        input=json.dumps({"Template": go, "Cases": cases}),
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout) == want


def test_modelfile_fields():
    text, r1 = build_modelfile("m-q8_0.gguf", 1024, CHAT_TEMPLATE, "runs/zero")
    assert r1 and text.startswith("# made by r1kit export ollama from runs/zero\n")
    assert "FROM ./m-q8_0.gguf\n" in text
    assert f'TEMPLATE """{OLLAMA_TEMPLATE}"""' in text
    for s in STOPS:
        assert f'PARAMETER stop "{s}"' in text
    assert "PARAMETER temperature 0.6\n" in text and "PARAMETER top_p 0.95\n" in text
    assert "PARAMETER num_ctx 1024\n" in text  # the model's context is below Ollama's default
    # a 128k-context model keeps Ollama's default; a non-R1 template gets no TEMPLATE or stops
    text, r1 = build_modelfile("m.gguf", 131072, "<|im_start|>{{ messages }}")
    assert not r1 and "TEMPLATE" not in text and "stop" not in text and "num_ctx" not in text


def test_export_ollama_cli(tmp_path, capsys):
    out = tmp_path / "oll"
    assert main(["export", "ollama", "--outtype", "q8_0", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"ollama create r1kit-tiny -f {out / 'Modelfile'}" in printed
    assert (out / "r1kit-tiny-q8_0.gguf").is_file()
    assert "FROM ./r1kit-tiny-q8_0.gguf" in (out / "Modelfile").read_text()


def test_export_ollama_out_that_is_a_file_is_refused_untouched(tmp_path, capsys):
    """--out names the directory for the GGUF and the Modelfile: a .gguf path (an earlier
    `export gguf` output) or another file is refused before anything is written over it."""
    gguf = tmp_path / "m-q8_0.gguf"
    gguf.write_bytes(b"GGUF earlier export")
    for out in (gguf, tmp_path / "new.gguf"):
        assert main(["export", "ollama", "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err == f"r1kit: error: --out {out}: ollama writes a directory (GGUF + Modelfile)\n"
    assert gguf.read_bytes() == b"GGUF earlier export" and not (tmp_path / "new.gguf").exists()
