"""The SQLite completion cache: keys, persistence, and several processes writing at once."""

import multiprocessing

import pytest

from feedback.cache import CompletionCache, cache_key


def _writer(path: str, start: int) -> None:
    cache = CompletionCache(path)
    for i in range(start, start + 60):  # 40 keys of its own, 20 also written by the other process
        cache.put(f"k{i}", {"text": f"answer {i}"})
    cache.close()


def test_keys_cover_the_endpoint_and_every_request_field():
    payload = {"model": "m", "prompt": "p", "temperature": 0.0, "max_tokens": 8, "stop": ["[END]"]}
    key = cache_key("http://a/v1/completions", payload)
    assert key == cache_key("http://a/v1/completions", dict(reversed(payload.items())))  # order does not matter
    assert key != cache_key("http://b/v1/completions", payload)
    for field, value in [("model", "n"), ("prompt", "q"), ("temperature", 0.7), ("max_tokens", 9), ("stop", [])]:
        assert key != cache_key("http://a/v1/completions", payload | {field: value}), field


def test_answers_persist_and_two_processes_can_write_at_once(tmp_path):
    path = str(tmp_path / "cache.sqlite")
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_writer, args=(path, start)) for start in (0, 40)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=60)
    assert [w.exitcode for w in workers] == [0, 0]
    cache = CompletionCache(path)
    assert len(cache) == 100 and cache.get("k0") == {"text": "answer 0"} and cache.get("k99") == {"text": "answer 99"}
    assert cache.get("k100") is None
    cache.put("k0", {"text": "other"})  # a lost race keeps the first answer
    assert cache.get("k0") == {"text": "answer 0"}


def test_a_file_that_is_not_a_cache_is_named(tmp_path):
    bad = tmp_path / "not-a-cache.sqlite"
    bad.write_text("hello, this is text")
    with pytest.raises(ValueError, match="not-a-cache.sqlite: not a usable teacher cache"):
        CompletionCache(bad)
