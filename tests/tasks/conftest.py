"""Task tests' fixtures."""

import pytest


@pytest.fixture
def fake_hub(monkeypatch):
    """``serve(splits)``: ``datasets.load_dataset`` answers from ``splits`` ({split: rows}, read at call time, so a
    test may edit them) and records each ``(name, config, split)`` it was asked for in the returned list."""
    import datasets

    def serve(splits: dict[str, list[dict]]) -> list[tuple[str, str, str]]:
        calls = []

        def load_dataset(name, config, split):
            calls.append((name, config, split))
            return datasets.Dataset.from_list(splits[split])

        monkeypatch.setattr(datasets, "load_dataset", load_dataset)
        return calls

    return serve
