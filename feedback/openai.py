"""A teacher behind any OpenAI-compatible endpoint: vLLM, TGI, llama.cpp's server, ``transformers serve``, a cloud API.

Built to run for hours against a flaky, rate-limited, paid API:

* ``concurrency`` requests in flight (threads; the work is waiting on the network);
* per-request ``timeout``; retries with exponential backoff and jitter on 429, 5xx, timeouts, connection resets and
  malformed JSON, waiting what ``Retry-After`` says when the server says it;
* a persistent cache (``feedback.cache``) consulted before and filled after every call, so a resumed or repeated run
  pays for no call twice (answers arrive in the cache as they complete, even in a round that fails later);
* counters (``usage()``): requests, calls, cache hits, retries, failures, dead requests, prompt/completion tokens,
  latency; the rollout callback logs them to TensorBoard per round (``teacher/*``);
* the API key is read from the environment variable named by ``api_key_env`` when a request is sent and kept
  nowhere else, so it cannot reach configs, checkpoints or logs; error messages are scrubbed of it too.

A request the server refuses (400/413/422: e.g. a prompt over the context length) or that stays malformed after the
retries drops that item with a counted reason. A request still failing after all its retries (no connection,
timeouts, 5xx, 429) is a *dead request*: that item is dropped too, with the reason ``teacher unavailable after N
tries: ...`` (written in the interaction log), counted as ``dead_requests``, never cached, and the round goes on.
When more than ``max_failed_fraction`` (default 0.1) of the round's requests are dead (a round runs from one
``reset_usage()`` to the next; the requests answered from the cache count too, so a resumed round counts the same),
or when the endpoint refuses the credentials or the model (401/403/404), ``TeacherUnavailable`` is raised: requests
not yet sent are cancelled, those in flight finish and are cached, and the round fails with a clear message;
``--ckpt_path last`` resumes it, answering from the cache what had already been answered and asking only the rest.
"""

from __future__ import annotations

import email.utils
import http.client
import json
import os
import random
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Literal

from feedback.base import Dropped, TeacherUnavailable
from feedback.cache import CompletionCache, cache_key
from feedback.llm import END, LLMTeacher

RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}
FATAL_STATUS = {401: "the endpoint refused the credentials", 403: "the endpoint refused the credentials",
                404: "no such endpoint or model (check base_url and model)"}
DEFAULT_CACHE = "~/.cache/selfimprove/teacher_cache.sqlite"
DEAD = "teacher unavailable"  # how a dead request's drop reason begins


class _Retry(Exception):
    """A transient failure worth another try; ``wait`` is the server's Retry-After, if it gave one."""

    def __init__(self, what: str, wait: float | None = None) -> None:
        super().__init__(what)
        self.wait = wait


class OpenAITeacher(LLMTeacher):
    """TriPosT's LLM teacher over an OpenAI-compatible HTTP API (completions or chat).

    Args:
        model: the model name the endpoint serves (recorded as the teacher in interaction logs).
        base_url: the API root, e.g. ``http://127.0.0.1:8000/v1`` (vLLM) or ``https://api.openai.com/v1``.
        api: ``completions`` (``/completions``, the few-shot prompt as is: the reference's setting) or ``chat``
            (``/chat/completions``, the prompt as one user message).
        api_key_env: name of the environment variable holding the API key (None: send no key). The key itself is
            never a config value.
        system_prompt: with ``api: chat``, an optional system message.
        concurrency: requests in flight.
        timeout: seconds a request may wait for the server (connect, and each read).
        max_retries: retries of one request after the first try (429, 5xx, timeouts, resets, malformed JSON).
        backoff: first retry delay in seconds; doubles each retry, with jitter, up to ``max_backoff``.
        max_backoff: longest computed delay (a server's Retry-After is honoured as given).
        cache_path: SQLite completion cache shared by runs and processes; None disables it.
        max_failed_fraction: most of a round's requests (those answered from the cache included) that may be dead,
            i.e. still failing after every retry, before the round fails with ``TeacherUnavailable``; dead ones below
            that are dropped items with a counted reason. 0 fails the round at the first dead request, 1 never.
        prompts_dir, scripted_feedback, feedback_temperature, improve_temperature, rationale_temperature,
            max_tokens: see ``feedback.llm.LLMTeacher``.
    """

    def __init__(self, model: str, base_url: str = "http://127.0.0.1:8000/v1",
                 api: Literal["completions", "chat"] = "completions", api_key_env: str | None = "OPENAI_API_KEY",
                 system_prompt: str | None = None, concurrency: int = 16, timeout: float = 60.0, max_retries: int = 6,
                 backoff: float = 1.0, max_backoff: float = 60.0, cache_path: str | None = DEFAULT_CACHE,
                 max_failed_fraction: float = 0.1, prompts_dir: str | None = None, scripted_feedback: bool = False,
                 feedback_temperature: float = 0.0, improve_temperature: float = 0.7, rationale_temperature: float = 0.0,
                 max_tokens: int = 512) -> None:
        super().__init__(prompts_dir, scripted_feedback, feedback_temperature, improve_temperature,
                         rationale_temperature, max_tokens)
        if concurrency < 1 or max_retries < 0 or timeout <= 0:
            raise ValueError("concurrency must be >= 1, max_retries >= 0 and timeout > 0")
        if not 0.0 <= max_failed_fraction <= 1.0:
            raise ValueError(f"max_failed_fraction must be in [0, 1], got {max_failed_fraction}")
        self.name = model
        self.model = model
        self.api = api
        self.url = base_url.rstrip("/") + ("/completions" if api == "completions" else "/chat/completions")
        self.api_key_env = api_key_env
        self.system_prompt = system_prompt
        self.concurrency = concurrency
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.cache_path = cache_path
        self.max_failed_fraction = max_failed_fraction
        self._cache: CompletionCache | None = None
        self._lock = threading.Lock()
        self.counts: Counter[str] = Counter()

    def __getstate__(self) -> dict:  # spawned ranks pickle callbacks: reopen the cache there, share no lock
        state = self.__dict__.copy()
        state["_cache"], state["_lock"] = None, None
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    @property
    def cache(self) -> CompletionCache | None:
        if self._cache is None and self.cache_path is not None:
            self._cache = CompletionCache(self.cache_path)
        return self._cache

    # ---- accounting ---------------------------------------------------------------------------------------------

    def usage(self) -> dict[str, float]:
        with self._lock:
            counts = {f"{k}": float(v) for k, v in self.counts.items()}
        counts = {"requests": 0.0, "dead_requests": 0.0} | counts  # logged every round, zeros included
        answered = counts.get("answered", 0.0)
        counts["latency_mean_s"] = counts.get("latency_s", 0.0) / answered if answered else 0.0
        return super().usage() | counts

    def reset_usage(self) -> None:
        super().reset_usage()
        with self._lock:
            self.counts.clear()

    def _add(self, **amounts: float) -> None:
        with self._lock:
            self.counts.update(amounts)

    # ---- completion ---------------------------------------------------------------------------------------------

    def complete(self, prompts: Sequence[str], temperature: float, max_tokens: int) -> list[str | Dropped]:
        payloads = [self._payload(p, temperature, max_tokens) for p in prompts]
        keys = [cache_key(self.url, p) for p in payloads]
        unique = dict(zip(keys, payloads))  # identical requests are asked once
        self._add(requests=len(unique))  # max_failed_fraction's denominator: cache hits included
        answers: dict[str, str | Dropped] = {}
        for key in unique:
            record = self.cache.get(key) if self.cache is not None else None
            if record is not None:
                answers[key] = record["text"]
        self._add(cache_hits=sum(key in answers for key in keys))
        todo = [(key, payload) for key, payload in unique.items() if key not in answers]
        if todo:
            self._fetch(todo, answers)
        return [answers[key] for key in keys]

    def _fetch(self, todo: list[tuple[str, dict]], answers: dict[str, str | Dropped]) -> None:
        """Answer ``todo`` concurrently, caching each answer as it arrives (never a drop: a rerun asks again). If the
        endpoint refuses us, or more than ``max_failed_fraction`` of the round's requests are dead, requests not yet
        started are cancelled, those in flight finish (and are cached), then the round fails."""
        failure: TeacherUnavailable | None = None
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(todo)), thread_name_prefix="teacher") as pool:
            futures = {pool.submit(self._request, payload): key for key, payload in todo}
            for future in as_completed(futures):
                if future.cancelled():
                    continue
                failed = failure is not None
                try:
                    answer = future.result()
                except TeacherUnavailable as error:
                    failure = failure or error
                else:
                    answers[futures[future]] = answer
                    if isinstance(answer, str) and self.cache is not None:
                        self.cache.put(futures[future], {"text": answer})
                    failure = failure or self._too_many_dead(answer)
                if failure is not None and not failed:
                    for pending in futures:
                        pending.cancel()
        if failure is not None:
            raise failure

    def _too_many_dead(self, answer: str | Dropped) -> TeacherUnavailable | None:
        """The round's failure once its dead requests pass ``max_failed_fraction`` of its requests so far (this
        whole batch included), else None."""
        with self._lock:
            dead, requests = self.counts["dead_requests"], self.counts["requests"]
        dead_answer = isinstance(answer, Dropped) and answer.unavailable
        if not dead_answer or dead <= self.max_failed_fraction * requests:
            return None
        last = answer.reason.partition(": ")[2]
        return TeacherUnavailable(self._scrub(
            f"teacher endpoint {self.url} gave no answer after {self.max_retries + 1} tries (last: {last}); {dead} of "
            f"{requests} requests this round failed, more than max_failed_fraction={self.max_failed_fraction}. Check "
            "that the server is up (base_url); answers received so far are cached, so rerunning (a fit: with "
            "--ckpt_path last) pays for none of them again"))

    def _payload(self, prompt: str, temperature: float, max_tokens: int) -> dict:
        body = {"model": self.model, "temperature": temperature, "max_tokens": max_tokens, "stop": [END]}
        if self.api == "completions":
            return body | {"prompt": prompt}
        messages = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        return body | {"messages": [*messages, {"role": "user", "content": prompt}]}

    def _request(self, payload: dict) -> str | Dropped:
        """One item: tries until an answer, a per-item refusal (``Dropped``) or the retries run out (``Dropped``,
        counted as a dead request)."""
        last = "no attempt"
        for attempt in range(self.max_retries + 1):
            if attempt:
                self._add(retries=1)
            try:
                return self._send(payload)
            except _Retry as error:
                last = str(error)
                if attempt < self.max_retries:
                    cap = min(self.max_backoff, self.backoff * 2**attempt)
                    time.sleep(error.wait if error.wait is not None else cap * random.uniform(0.5, 1.0))
        self._add(failures=1)
        if last.startswith("malformed"):
            return Dropped(f"endpoint answer unusable after {self.max_retries + 1} tries: {last}")
        self._add(dead_requests=1)
        return Dropped(self._scrub(f"{DEAD} after {self.max_retries + 1} tries: {last}"), unavailable=True)

    def _send(self, payload: dict) -> str | Dropped:
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.api_key_env) if self.api_key_env else None
        if key:
            headers["Authorization"] = f"Bearer {key}"
        request = urllib.request.Request(self.url, data=json.dumps(payload).encode(), headers=headers, method="POST")
        self._add(calls=1)
        start = time.perf_counter()
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                body = response.read()
        except urllib.error.HTTPError as error:
            return self._http_error(error)
        except (urllib.error.URLError, TimeoutError, ConnectionError, http.client.HTTPException, OSError) as error:
            raise _Retry(self._scrub(f"{type(error).__name__}: {getattr(error, 'reason', error)}")) from None
        try:
            data = json.loads(body)
            choice = data["choices"][0]
            text = choice["text"] if self.api == "completions" else choice["message"]["content"]
            if not isinstance(text, str):
                raise TypeError("completion text is not a string")
        except (ValueError, KeyError, IndexError, TypeError) as error:
            raise _Retry(f"malformed response ({type(error).__name__}: {str(error)[:80]})") from None
        usage = data.get("usage") or {}
        self._add(answered=1, latency_s=time.perf_counter() - start,
                  prompt_tokens=int(usage.get("prompt_tokens") or 0),
                  completion_tokens=int(usage.get("completion_tokens") or 0))
        return text

    def _http_error(self, error: urllib.error.HTTPError) -> Dropped:
        detail = self._scrub(error.read().decode("utf-8", "replace")[:200].strip())
        if error.code in RETRY_STATUS:
            raise _Retry(f"HTTP {error.code}", retry_after(error.headers.get("Retry-After")))
        if error.code in FATAL_STATUS:
            hint = f"; the key is read from ${self.api_key_env}" if error.code in (401, 403) and self.api_key_env else ""
            raise TeacherUnavailable(f"{self.url}: HTTP {error.code}: {FATAL_STATUS[error.code]}{hint} ({detail})")
        self._add(failures=1)
        return Dropped(f"request rejected: HTTP {error.code}: {detail}")

    def _scrub(self, text: str) -> str:
        key = os.environ.get(self.api_key_env) if self.api_key_env else None
        return text.replace(key, "***") if key else text


def retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header: a number of seconds or an HTTP date; None if absent or garbled."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
