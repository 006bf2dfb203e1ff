"""OpenAI-compatible teacher throughput against a local server with a fixed per-request latency.

    python bench/teacher_throughput.py                      # 0.5 s latency, 64 requests, concurrency 1 vs 16
    python bench/teacher_throughput.py --latency 0.2 --requests 128 --concurrency 32

Prints requests/s at concurrency 1 and at ``--concurrency`` (target: >= 12x at 16 with 0.5 s latency), and a fully
cached rerun of the same requests (target: zero requests, seconds). The server (``tests/openai_server.py``) answers
feedback prompts of the multistep-arithmetic task through the real ``OpenAITeacher.feedback`` path: prompt
rendering, HTTP, JSON, parsing, cache writes.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, as cli.py does

from feedback.base import Feedback  # noqa: E402
from feedback.openai import OpenAITeacher  # noqa: E402
from tasks import MultistepArithmetic  # noqa: E402
from tests.feedback.test_openai import FEEDBACK_PROMPT, arithmetic_answer, wrong_attempt  # noqa: E402
from tests.openai_server import FakeOpenAI, max_overlap  # noqa: E402

TARGET = 12.0


def run(server: FakeOpenAI, teacher: OpenAITeacher, task, items) -> tuple[float, int]:
    """Seconds for one ``feedback`` call over ``items`` and the requests the server saw."""
    server.records.clear()
    start = time.perf_counter()
    answers = teacher.feedback(task, items)
    seconds = time.perf_counter() - start
    if not all(isinstance(a, Feedback) for a in answers):
        raise RuntimeError(f"unexpected answers: {[a for a in answers if not isinstance(a, Feedback)][:3]}")
    return seconds, len(server.records)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--latency", type=float, default=0.5, help="seconds the server waits before each answer")
    p.add_argument("--requests", type=int, default=64, help="requests at the high concurrency (and in the rerun)")
    p.add_argument("--serial-requests", type=int, default=8, help="requests at concurrency 1")
    p.add_argument("--concurrency", type=int, default=16)
    args = p.parse_args()

    task = MultistepArithmetic(num_train=max(args.requests, args.serial_requests), num_test_per_combo=1, seed=0)
    items = [(q, wrong_attempt(task, q)) for q in task.questions("train")]
    server = FakeOpenAI(arithmetic_answer, latency=args.latency)
    with tempfile.TemporaryDirectory() as tmp:
        prompts = Path(tmp) / "prompts" / task.name
        prompts.mkdir(parents=True)
        (prompts / "feedback.txt").write_text(FEEDBACK_PROMPT)
        common = dict(model="bench", base_url=server.base_url, api_key_env=None, prompts_dir=str(prompts.parent))
        try:
            serial_s, _ = run(server, OpenAITeacher(concurrency=1, cache_path=None, **common), task,
                              items[: args.serial_requests])
            cached = OpenAITeacher(concurrency=args.concurrency, cache_path=f"{tmp}/cache.sqlite", **common)
            parallel_s, _ = run(server, cached, task, items[: args.requests])
            overlap = max_overlap(server.records)
            rerun_s, rerun_requests = run(server, OpenAITeacher(concurrency=args.concurrency,
                                                                cache_path=f"{tmp}/cache.sqlite", **common),
                                          task, items[: args.requests])
        finally:
            server.close()

    serial_rps, parallel_rps = args.serial_requests / serial_s, args.requests / parallel_s
    speedup = parallel_rps / serial_rps
    print(f"server latency {args.latency:.2f} s per request")
    print(f"{'concurrency':>12} {'requests':>9} {'seconds':>8} {'req/s':>7}")
    print(f"{1:>12} {args.serial_requests:>9} {serial_s:>8.2f} {serial_rps:>7.2f}")
    print(f"{args.concurrency:>12} {args.requests:>9} {parallel_s:>8.2f} {parallel_rps:>7.2f}   (max in flight: {overlap})")
    print(f"speed-up {speedup:.1f}x (target >= {TARGET:.0f}x at concurrency 16): {'OK' if speedup >= TARGET else 'BELOW'}")
    print(f"cached rerun of {args.requests} requests: {rerun_requests} requests sent, {rerun_s:.3f} s "
          f"({'OK' if rerun_requests == 0 else 'NOT CACHED'})")


if __name__ == "__main__":
    main()
