"""A real HTTP server on 127.0.0.1 speaking the OpenAI completions/chat protocol, with scripted answers and faults.

``answer(prompt) -> str`` writes the completion; ``faults`` is a queue of what the next requests get instead
(``429`` with Retry-After, ``500``, a ``hang`` past the client's timeout, ``malformed`` JSON), consumed one per
request; ``fault_of(prompt)``, when set, names the fault of every request for that prompt that the queue leaves
alone (None: answer it), so chosen items can fail every try however the client orders its requests. Every request
is recorded with its start/end time and headers, so tests can measure overlap. Overlap is made certain, not left to
timing: with ``gate`` set, every request waits until ``gate`` requests have arrived (at most ``gate_s`` seconds,
after which the gate stays open); a ``hang`` lasts until ``release`` is set (at most ``hang_s``), so a test can see
it still in flight after the client moved on.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Record:
    path: str
    body: dict
    headers: dict[str, str]
    start: float
    end: float = 0.0


@dataclass
class FakeOpenAI:
    answer: Callable[[str], str]
    latency: float = 0.0
    faults: list[str] = field(default_factory=list)
    fault_of: Callable[[str], str | None] | None = None
    hang_s: float = 3.0
    gate: int = 0
    gate_s: float = 5.0
    records: list[Record] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._arrived = 0
        self._gate_open = threading.Event()
        self.release = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                record = self.record = Record(self.path, body, dict(self.headers), time.perf_counter())
                with server._lock:
                    server.records.append(record)
                    fault = server.faults.pop(0) if server.faults else None
                    if fault is None and server.fault_of is not None:
                        fault = server.fault_of(prompt_of(body))
                    server._arrived += 1
                    if server._arrived >= server.gate:
                        server._gate_open.set()
                if not server._gate_open.wait(server.gate_s):
                    server._gate_open.set()  # a client that never fills the gate waits once, not on every request
                try:
                    server._reply(self, body, fault)
                finally:
                    record.end = time.perf_counter()

        self.httpd = _Server(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def close(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    def _reply(self, handler: BaseHTTPRequestHandler, body: dict, fault: str | None) -> None:
        if fault == "hang":
            self.release.wait(self.hang_s)
            return _send(handler, 200, b'{"choices": []}')
        if fault is not None and fault.startswith("429"):
            return _send(handler, 429, b'{"error": "rate limited"}', {"Retry-After": fault.partition(":")[2] or "0.2"})
        if fault == "500":
            return _send(handler, 500, b'{"error": "boom"}')
        if fault == "malformed":
            return _send(handler, 200, b'{"choices": [{"text": ')
        if fault is not None and fault.isdigit():
            return _send(handler, int(fault), b'{"error": "refused"}')
        time.sleep(self.latency)
        prompt = prompt_of(body)
        text = self.answer(prompt)
        choice = {"text": text} if "prompt" in body else {"message": {"role": "assistant", "content": text}}
        usage = {"prompt_tokens": len(prompt.split()), "completion_tokens": len(text.split())}
        _send(handler, 200, json.dumps({"choices": [choice], "usage": usage}).encode())


class _Server(ThreadingHTTPServer):
    request_queue_size = 128  # the default backlog of 5 drops bursts of connections (as real servers do not)

    def handle_error(self, request, client_address) -> None:  # a handler that raised dropped its connection: enough
        pass


def _send(handler: BaseHTTPRequestHandler, status: int, payload: bytes, headers: dict[str, str] | None = None) -> None:
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(payload)))
    for key, value in (headers or {}).items():
        handler.send_header(key, value)
    handler.end_headers()
    handler.record.end = time.perf_counter()  # before the client can have the answer (and send its next request)
    handler.wfile.write(payload)


def prompt_of(body: dict) -> str:
    """The prompt of a completions request, or the last message of a chat one."""
    return body["prompt"] if "prompt" in body else body["messages"][-1]["content"]


def max_overlap(records: list[Record]) -> int:
    """Most requests the server was handling at the same moment."""
    events = sorted([(r.start, 1) for r in records] + [(r.end, -1) for r in records])
    best = current = 0
    for _, delta in events:
        current += delta
        best = max(best, current)
    return best
