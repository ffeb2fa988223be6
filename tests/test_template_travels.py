"""The prompt format travels with the model (DESIGN.md section 3): a model r1kit trains carries
its template, and eval, serve and the Ollama export use it without being told.

End to end as a user would: `r1kit zero` for a few steps, then `eval` with and without
`--template`, `serve` through the `openai` client, and `export ollama`."""

from __future__ import annotations

import json
import random
import threading
import time

import pytest
from serve_server import free_port

from r1kit.chat import (
    CHAT_TEMPLATE,
    R1ZERO_CHAT_TEMPLATE,
    AnswerTagStream,
    answer_content,
    encode_prompt,
    r1zero_prompt,
    render_chat,
    set_template,
    split_reasoning,
    template_of,
)
from r1kit.cli import main
from r1kit.data.datasets import heldout
from r1kit.modeling import load_tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
)


def test_r1zero_chat_template_is_the_plain_prompt():
    """The Jinja form renders exactly the R1-Zero prompt, and both encode to the same ids."""
    tok = load_tokenizer(None)
    assert template_of(tok) == "r1zero"  # the embedded base was pretrained on that format
    assert tok.chat_template == R1ZERO_CHAT_TEMPLATE
    for q in ("What is 2+3?", "  Solve 3x + 4 = 10.  ", "问题: 7 - 2 = ?"):
        text = tok.apply_chat_template(
            [{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True
        )
        assert text == tok.bos_token + r1zero_prompt(q)
        ids = encode_prompt(tok, text)
        assert ids == encode_prompt(tok, r1zero_prompt(q))
        assert ids.count(tok.bos_token_id) == 1 and ids[0] == tok.bos_token_id


def test_template_of_and_set_template():
    tok = load_tokenizer(None)
    set_template(tok, "chat")  # an R1-Zero tokenizer gets the DeepSeek-R1 chat template
    assert tok.chat_template == CHAT_TEMPLATE and template_of(tok) == "chat"
    set_template(tok, "r1zero")
    assert template_of(tok) == "r1zero"
    tok.chat_template = CHATML  # an instruct model's own template is kept for "chat"
    set_template(tok, "chat")
    assert tok.chat_template == CHATML and template_of(tok) == "chat"
    tok.chat_template = None  # a base model without any template speaks R1-Zero
    assert template_of(tok) == "r1zero"
    with pytest.raises(ValueError, match="unknown template"):
        set_template(tok, "alpaca")


def test_encode_prompt_adds_one_bos_on_every_path():
    """Chat-template text (BOS written by the template) and plain text (/v1/completions, the
    R1-Zero prompt) both start with exactly one BOS, as the tokenizer's own default has it."""
    tok = load_tokenizer(None)
    set_template(tok, "chat")
    text = render_chat(tok, [{"role": "user", "content": "hi"}])
    assert text.startswith(tok.bos_token)
    for t in (text, "hello there", r1zero_prompt("hi")):
        ids = encode_prompt(tok, t)
        assert ids[0] == tok.bos_token_id and ids.count(tok.bos_token_id) == 1
    assert encode_prompt(tok, "hello there") == tok("hello there").input_ids


@pytest.mark.parametrize(
    "text, answer",
    [
        (" <answer> 5 </answer>", "5"),
        (" <answer>(8</answer> and more", "(8"),
        ("\n<answer>\nx = 2, y = 3\n</answer>\n<answer> 7 </answer>", "x = 2, y = 3"),
        (" The answer is 5.", "The answer is 5."),  # no tags: the answer part as written
        (" <answer> 12 </ans", "12 </ans"),  # the closing tag never completed
        (" <ans", "<ans"),
        ("", ""),
    ],
)
def test_answer_tags_streamed_in_any_chunks_equal_whole(text, answer):
    assert answer_content(text) == answer
    rng = random.Random(0)
    for _ in range(40):
        s, out, i = AnswerTagStream(), "", 0
        while i < len(text):
            j = i + rng.randint(1, 5)
            out += s.feed(text[i:j])
            i = j
        assert out + s.close() == answer


@pytest.fixture(scope="module")
def zero_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("zero") / "run"
    args = [
        "zero",
        "--steps",
        "2",
        "--prompts-per-step",
        "4",
        "--group-size",
        "4",
        "--eval-problems",
        "4",
        "--eval-k",
        "2",
        "--max-new-tokens",
        "48",
        "--out",
        str(out),
        "--quiet",
    ]
    assert main(args) == 0
    return out


def test_trained_model_carries_its_format(zero_run):
    final = zero_run / "final"
    assert json.loads((final / "r1kit.json").read_text()) == {"template": "r1zero"}
    assert template_of(load_tokenizer(str(final))) == "r1zero"
    assert load_tokenizer(str(zero_run)).chat_template == R1ZERO_CHAT_TEMPLATE


def test_eval_defaults_to_the_models_format(zero_run, tmp_path):
    data = tmp_path / "heldout.jsonl"
    with data.open("w") as f:
        for ex in heldout("arith+linear", 12):
            f.write(json.dumps({"question": ex["question"], "answer": ex["answer"]}) + "\n")
    summaries, prompts = {}, {}
    for tpl in ("auto", "r1zero", "chat"):
        out = tmp_path / f"eval-{tpl}"
        args = [
            "eval",
            str(zero_run),
            "--data",
            str(data),
            "--k",
            "2",
            "--max-tokens",
            "48",
            "--out",
            str(out),
            "--quiet",
        ] + ([] if tpl == "auto" else ["--template", tpl])
        assert main(args) == 0
        summaries[tpl] = json.loads((out / "summary.json").read_text())
        first = json.loads((out / "samples.jsonl").open().readline())
        prompts[tpl] = first["prompt"]
    assert summaries["auto"]["pass@1"] == summaries["r1zero"]["pass@1"]
    assert prompts["auto"] == prompts["r1zero"] and "User:" in prompts["auto"]
    assert prompts["chat"] != prompts["auto"]  # the override really changes the prompt


class _LocalServer:
    def __init__(self, model: str) -> None:
        import uvicorn

        from r1kit.serve.app import create_app, make_generator
        from r1kit.serve.store import Store

        self.gen, _ = make_generator(model, max_waiting=16)
        app = create_app(self.gen, Store(":memory:"), auth=False)
        self.url = f"http://127.0.0.1:{free_port()}"
        port = int(self.url.rsplit(":", 1)[1])
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        t0 = time.time()
        while not self.server.started and time.time() - t0 < 30:
            time.sleep(0.02)

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.gen.close()


def test_served_r1zero_model_answers_in_content(zero_run):
    """Through the `openai` client, a model trained by `zero` answers with the text inside its
    <answer> tags as `content` and the text in <think> as `reasoning_content`: the same split
    as its raw completion of the same prompt (greedy)."""
    import openai

    srv = _LocalServer(str(zero_run))
    try:
        client = openai.OpenAI(base_url=srv.url + "/v1", api_key="none", max_retries=0)
        name = client.models.list().data[0].id
        checked = 0
        for ex in heldout("mix", 8):
            msgs = [{"role": "user", "content": ex["question"]}]
            raw = (
                client.completions.create(
                    model=name, prompt=render_chat(srv.gen.tok, msgs), max_tokens=64, temperature=0
                )
                .choices[0]
                .text
            )
            reasoning, after = split_reasoning(raw)
            if after is None or "</answer>" not in after:
                continue  # the tiny model did not close its answer here: nothing to compare
            msg = client.chat.completions.create(
                model=name, messages=msgs, max_tokens=64, temperature=0
            ).choices[0]
            assert msg.message.reasoning_content == reasoning
            assert msg.message.content == answer_content(after)
            assert "<answer>" not in msg.message.content and msg.finish_reason == "stop"
            checked += 1
        assert checked >= 2, "the trained model closed fewer than 2 of 8 answers"
    finally:
        srv.close()


def test_export_ollama_keeps_the_format(zero_run, tmp_path, capsys):
    from r1kit.export.info import gguf_summary
    from r1kit.export.modelfile import OLLAMA_R1ZERO_TEMPLATE, OLLAMA_TEMPLATE, ollama_tag

    out = tmp_path / "oll"
    assert main(["export", "ollama", str(zero_run), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    gguf = next(out.glob("*.gguf"))
    meta = gguf_summary(gguf)
    assert meta["chat_template"] == R1ZERO_CHAT_TEMPLATE
    assert f'TEMPLATE """{OLLAMA_R1ZERO_TEMPLATE}"""' in (out / "Modelfile").read_text()
    # the name `r1kit serve FILE.gguf` shows is the one `ollama create` is told
    assert f"ollama create {ollama_tag(meta['name'])} -f" in printed
    # --template overrides the model's own format
    out2 = tmp_path / "oll-chat"
    assert main(["export", "ollama", str(zero_run), "--out", str(out2), "--template", "chat"]) == 0
    assert f'TEMPLATE """{OLLAMA_TEMPLATE}"""' in (out2 / "Modelfile").read_text()
