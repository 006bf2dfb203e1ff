"""The SQLite completion cache: keys, persistence, and several processes writing at once."""

import multiprocessing
import sqlite3

import pytest

from feedback import cache as cache_module
from feedback.cache import CompletionCache, cache_key


def _writer(path: str, start: int) -> None:
    cache = CompletionCache(path)
    for i in range(start, start + 60):  # 40 keys of its own, 20 also written by the next process
        cache.put(f"k{i}", {"text": f"answer {i}"})
    cache.close()


def test_keys_cover_the_endpoint_and_every_request_field():
    payload = {"model": "m", "prompt": "p", "temperature": 0.0, "max_tokens": 8, "stop": ["[END]"]}
    key = cache_key("http://a/v1/completions", payload)
    assert key == cache_key("http://a/v1/completions", dict(reversed(payload.items())))  # order does not matter
    assert key != cache_key("http://b/v1/completions", payload)
    for field, value in [("model", "n"), ("prompt", "q"), ("temperature", 0.7), ("max_tokens", 9), ("stop", [])]:
        assert key != cache_key("http://a/v1/completions", payload | {field: value}), field


def test_answers_persist_and_processes_can_open_and_write_at_once(tmp_path):
    path = str(tmp_path / "cache.sqlite")
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_writer, args=(path, start)) for start in (0, 40, 80, 120)]  # one new file
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=60)
    assert [w.exitcode for w in workers] == [0, 0, 0, 0]
    cache = CompletionCache(path)  # keys 0..179: the last writer wrote 120..179
    assert len(cache) == 180 and cache.get("k0") == {"text": "answer 0"} and cache.get("k179") == {"text": "answer 179"}
    assert cache.get("k180") is None
    cache.put("k0", {"text": "other"})  # a lost race keeps the first answer
    assert cache.get("k0") == {"text": "answer 0"}


class _LockedAtFirst:
    """A connection whose first ``failures`` statements fail as SQLite does when another process is switching the
    same new file to WAL ("database is locked", at once, without the busy wait)."""

    def __init__(self, connection, failures):
        self.connection, self.failures, self.statements = connection, failures, []

    def execute(self, sql, *args):
        self.statements.append(sql)
        if self.failures:
            self.failures -= 1
            raise sqlite3.OperationalError("database is locked")
        return self.connection.execute(sql, *args)

    def __getattr__(self, name):
        return getattr(self.connection, name)


def test_opening_retries_while_another_process_holds_the_new_file(tmp_path, monkeypatch):
    connect = sqlite3.connect
    made = []
    monkeypatch.setattr(cache_module.sqlite3, "connect", lambda *a, **k: made.append(_LockedAtFirst(connect(*a, **k), 3))
                        or made[-1])
    cache = CompletionCache(tmp_path / "cache.sqlite")
    assert made[0].statements[:4] == ["PRAGMA journal_mode=WAL"] * 4  # three locked tries, then it went through
    cache.put("k", {"text": "a"})
    assert cache.get("k") == {"text": "a"}
    made.clear()
    monkeypatch.setattr(cache_module.sqlite3, "connect", lambda *a, **k: made.append(_LockedAtFirst(connect(*a, **k), 10**6))
                        or made[-1])
    with pytest.raises(ValueError, match=r"locked.sqlite: not a usable teacher cache \(database is locked\)"):
        CompletionCache(tmp_path / "locked.sqlite", timeout=0.2)  # locked for longer than the timeout: named


def test_a_file_that_is_not_a_cache_is_named(tmp_path):
    bad = tmp_path / "not-a-cache.sqlite"
    bad.write_text("hello, this is text")
    with pytest.raises(ValueError, match="not-a-cache.sqlite: not a usable teacher cache"):
        CompletionCache(bad)
