"""`r1kit distill`: a teacher behind r1kit's own OpenAI-compatible server (started here, with
429/503 answers injected in front of it), cached answers and resume, usage and cost; a teacher
without reasoning; a local teacher into a truncated student."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
from openai_stub import StubServer

from r1kit.cli import main
from r1kit.config import DistillConfig
from r1kit.errors import R1kitError
from r1kit.pipeline.distill import run_distill

pytestmark = pytest.mark.usefixtures("one_thread")


class FaultyR1kitServer:
    """r1kit serve (embedded model) whose first chat requests get the scripted statuses."""

    def __init__(self, fail: list[int]) -> None:
        import uvicorn
        from fastapi.responses import JSONResponse
        from serve_server import _model, _tokenizer, free_port

        from r1kit.serve.app import create_app
        from r1kit.serve.generation import Generator
        from r1kit.serve.store import Store

        self.dir = Path(__import__("tempfile").mkdtemp(prefix="r1kit-distill-"))
        self.gen = Generator(
            _model(), _tokenizer(), "r1kit-tiny", max_waiting=64, kv_memory=32 << 20
        )
        self.store = Store(self.dir / "r1kit.db")
        self.key, _ = self.store.create_key("tests")
        app = create_app(self.gen, self.store, auth=True)
        self.fail, self.statuses, self.lock = list(fail), [], threading.Lock()

        @app.middleware("http")
        async def inject(request, call_next):
            if request.url.path.endswith("/chat/completions"):
                with self.lock:
                    code = self.fail.pop(0) if self.fail else 200
                    self.statuses.append(code)
                if code != 200:
                    return JSONResponse(
                        {
                            "error": {
                                "message": "injected",
                                "type": "x",
                                "param": None,
                                "code": code,
                            }
                        },
                        status_code=code,
                        headers={"retry-after-ms": "10"},
                    )
            return await call_next(request)

        self.url = f"http://127.0.0.1:{free_port()}/v1"
        port = int(self.url.rsplit(":", 1)[1].split("/")[0])
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        while not self.server.started:
            time.sleep(0.02)

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.gen.close()


def test_endpoint_teacher_retries_caches_resumes_and_prices(tmp_path):
    srv = FaultyR1kitServer(fail=[429, 503, 500])
    out = tmp_path / "d"
    args = [
        "distill",
        "--teacher",
        srv.url,
        "--api-key",
        srv.key,
        "--prompts",
        "6",
        "--k",
        "2",
        "--max-tokens",
        "24",
        "--epochs",
        "0",
        "--out",
        str(out),
        "--concurrency",
        "2",
        "--price-prompt",
        "1",
        "--price-completion",
        "2",
        "--seed",
        "3",
    ]
    try:
        assert main(args) == 0
        assert srv.statuses[:3] == [429, 503, 500] and srv.statuses.count(200) == 12
        s = json.loads((out / "summary.json").read_text())
        u = s["usage"]
        assert s["answers"] == 12 and u["requests_now"] == 12 and u["cached"] == 0
        assert u["prompt_tokens_now"] > 0 and u["completion_tokens_now"] > 0
        cost = (u["prompt_tokens_now"] * 1 + u["completion_tokens_now"] * 2) / 1e6
        assert u["cost_usd_now"] == pytest.approx(cost)
        assert s["kept"] + sum(s["removed"].values()) == 12
        # interrupted half-way: only the missing answers are asked for (and paid) again
        lines = (out / "teacher" / "samples.jsonl").read_text().splitlines()
        (out / "teacher" / "samples.jsonl").write_text("\n".join(lines[:7]) + "\n")
        assert main(args) == 0
        s2 = json.loads((out / "summary.json").read_text())
        assert s2["usage"]["requests_now"] == 5 and s2["usage"]["cached"] == 7
        assert srv.statuses.count(200) == 17
        assert main(args) == 0  # complete: nothing asked
        assert srv.statuses.count(200) == 17
        assert json.loads((out / "summary.json").read_text())["usage"]["cost_usd_now"] == 0
    finally:
        srv.close()


class NoReasoningStub(StubServer):
    def reply(self, body):
        code, data, headers = super().reply(body)
        if code == 200:
            data["choices"][0]["message"].pop("reasoning_content")
        return code, data, headers


def test_teacher_without_reasoning_is_reported(tmp_path):
    with NoReasoningStub({}) as stub:
        cfg = DistillConfig.of(
            teacher=stub.url, api_key="sk-test", prompts=4, k=1, epochs=0, out=str(tmp_path / "d")
        )
        with pytest.raises(R1kitError, match="no reasoning in any of its 4 answers"):
            run_distill(cfg, progress=False)


def test_local_teacher_into_a_truncated_student(tmp_path):
    cfg = DistillConfig.of(
        teacher=None,
        student_layers="0,3",
        prompts=24,
        k=2,
        max_tokens=64,
        epochs=1,
        batch_size=16,
        eval_problems=4,
        eval_k=2,
        out=str(tmp_path / "d"),
    )
    s = run_distill(cfg, progress=False)
    assert s["student_init"]["params_after"] < s["student_init"]["params_before"]
    assert s["kept"] > 0 and s["student"]["examples"] == s["kept"]
    assert "final_pass1" in s["student"]
    from transformers import AutoConfig

    assert AutoConfig.from_pretrained(tmp_path / "d" / "student" / "final").num_hidden_layers == 2
