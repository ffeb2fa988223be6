"""The remote backend: any OpenAI-compatible endpoint (DeepSeek's API, vLLM, r1kit's server).

One chat completion per sample through the `openai` client, at most `concurrency` in flight
(threads); 429, 5xx, timeouts and refused connections are retried with exponential backoff and
jitter (Retry-After honoured), anything else the user must fix stops the run in one line.
`reasoning_content` (or `reasoning`, as vLLM and Ollama call it) is kept when the endpoint
returns it; otherwise think tags in the content are split as everywhere else.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

from r1kit.errors import R1kitError
from r1kit.eval.backends import Params, Request, user_message
from r1kit.eval.scoring import split_output

RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}


class RemoteBackend:
    kind = "remote"
    template = "chat"

    def __init__(
        self,
        base_url: str,
        api_key: str | None,
        model: str | None = None,
        concurrency: int = 16,
        retries: int = 5,
        backoff_s: float = 1.0,
        timeout_s: float = 3600.0,
    ) -> None:
        import openai

        self.base_url = base_url
        self.retries, self.backoff_s = retries, backoff_s
        self.concurrency = concurrency
        self._stop = threading.Event()
        self._error: R1kitError | None = None  # the first error that ended the run
        self.client = openai.OpenAI(
            base_url=base_url, api_key=api_key or "EMPTY", max_retries=0, timeout=timeout_s
        )
        self.name = model or self._first_model()

    def _first_model(self) -> str:
        models = self._call(lambda: self.client.models.list().data)
        if not models:
            raise R1kitError(f"{self.base_url} serves no models; name one with --model")
        return models[0].id

    def generate(self, requests: list[Request], params: Params) -> Iterator[list[dict]]:
        jobs = [(r, j) for r in requests for j in range(r.start, r.start + r.n)]
        self._stop.clear()
        self._error = None
        pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="r1kit-eval")
        pending = {pool.submit(self._sample, r, j, params) for r, j in jobs}
        try:
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                failed = [f.exception() for f in done if f.exception() is not None]
                ok = [f.result() for f in done if f.exception() is None]
                if ok:  # paid for: kept even when another request of the batch failed
                    yield ok
                if failed:  # the error that stopped the run, not a "stopped" of another worker
                    raise self._error or failed[0]
        finally:  # on error or interrupt: stop retries, drop queued work, cut open requests
            self._stop.set()
            pool.shutdown(wait=False, cancel_futures=True)
            if pending:
                self.client.close()
            pool.shutdown(wait=True)

    def _sample(self, r: Request, j: int, params: Params) -> dict:
        prompt = user_message(r.problem["question"])
        kw = {"seed": r.seed + j} if r.seed is not None else {}
        resp = self._call(
            lambda: self.client.chat.completions.create(
                model=self.name,
                messages=[{"role": "user", "content": prompt}],
                temperature=params.temperature,
                top_p=params.top_p,
                max_tokens=params.max_tokens,
                **kw,
            )
        )
        choice = resp.choices[0]
        msg = choice.message
        extra = msg.model_extra or {}
        thought = extra.get("reasoning_content") or extra.get("reasoning")
        content = msg.content or ""
        if thought is not None:
            reasoning, answer = thought.strip(), content.strip()
        else:
            reasoning, answer = split_output(content, in_think=False)
        usage = resp.usage
        return {
            "problem_id": r.problem["id"],
            "sample": j,
            "prompt": prompt,
            "reasoning": reasoning,
            "answer": answer,
            "tokens": usage.completion_tokens if usage else None,
            "prompt_tokens": usage.prompt_tokens if usage else None,
            "finish_reason": choice.finish_reason,
        }

    def _fatal(self, msg: str) -> R1kitError:
        """The error that ends the run. Stop is set before raising, so the other workers send
        nothing more (a queued request would otherwise start before the caller sees it)."""
        err = R1kitError(msg)
        if self._error is None:
            self._error = err
        self._stop.set()
        return err

    def _call(self, fn):
        """fn() with retries on transient failures; R1kitError for what the user must fix."""
        import openai

        for attempt in range(self.retries + 1):
            if self._stop.is_set():
                raise R1kitError("evaluation stopped")
            try:
                return fn()
            except openai.APIConnectionError as err:
                if attempt == self.retries or self._stop.is_set():
                    kind = "timed out" if isinstance(err, openai.APITimeoutError) else "is down"
                    raise self._fatal(
                        f"cannot reach {self.base_url}: the endpoint {kind} ({_cause(err)})"
                    ) from None
                delay = None
            except openai.APIStatusError as err:
                code = err.status_code
                if code not in RETRY_STATUS:
                    raise self._fatal(_explain(self.base_url, self.name_or_none(), err)) from None
                if attempt == self.retries:
                    raise self._fatal(
                        f"{self.base_url} still answers {code} ({_message(err)}) after "
                        f"{self.retries} retries; lower --concurrency or try later"
                    ) from None
                delay = _retry_after(err)
            if delay is None:
                delay = min(60.0, self.backoff_s * 2**attempt) * (0.5 + random.random())
            self._stop.wait(delay)
        raise AssertionError("unreachable")

    def name_or_none(self) -> str | None:
        return getattr(self, "name", None)

    def close(self) -> None:
        self.client.close()


def _message(err) -> str:
    body = err.body if isinstance(err.body, dict) else {}
    msg = body.get("message") or (body.get("error") or {}).get("message") if body else None
    return str(msg or err.message).splitlines()[0][:200]


def _cause(err) -> str:
    cause = err.__cause__ or err.__context__ or err
    return str(cause).splitlines()[0][:200] or type(cause).__name__


def _retry_after(err) -> float | None:
    headers = err.response.headers if err.response is not None else {}
    for name, scale in (("retry-after-ms", 1e-3), ("retry-after", 1.0)):
        try:
            return min(60.0, max(0.0, float(headers[name]) * scale))
        except (KeyError, ValueError):
            continue
    return None


def _explain(base_url: str, model: str | None, err) -> str:
    code, msg = err.status_code, _message(err)
    if code in (401, 403):
        return (
            f"{base_url} refused the API key ({code}: {msg}); pass --api-key or set OPENAI_API_KEY"
        )
    if code == 402:
        return f"{base_url} says the account's quota is exhausted (402: {msg})"
    if code == 404:
        what = f"model {model!r}" if model else "the API"
        return f"{base_url} has no {what} (404: {msg}); check --base-url (ends in /v1?) and --model"
    return f"{base_url} rejected the request ({code}: {msg})"
