"""The interaction log: the one contract every part shares (see DESIGN.md).

JSON Lines, one episode per line, one shard per (run, iteration): ``{log_dir}/iter_{k:03d}.jsonl``. Shards are
written atomically (temp file + ``os.replace``) and never rewritten, so a resumed run can tell "this iteration's
rollouts are done" from the file's existence alone. Every line is validated on read; a bad line raises
``LogError("path:line: what is wrong")`` instead of being skipped.

An episode (schema version 1)::

    {"schema": 1, "id": "ma-train-00012/it1", "task": "multistep_arithmetic", "iteration": 1,
     "question_id": "ma-train-00012", "bucket": "l3-4d2",
     "prompt": "Q: ...\\nAnswer: Let's think step by step. ...\\n", "gold": "-7",
     "turns": [{"role": "attempt", "text": "(1) ...", "by": "policy"},
               {"role": "feedback", "text": "Step (1) is correct. In step (2) ...", "by": "script"},
               {"role": "improvement", "text": "(1) ...", "by": "script"},
               {"role": "feedback", "text": "Step (1) to step (4) are correct. ...", "by": "script"}],
     "outcome": "improved", "reason": null, "scores": {}}

A turn a policy sampled may carry ``"tokens"``, the ids it generated (EOS included when it stopped), so RL trains
on exactly those instead of re-tokenising the text. Turn texts carry no headers: an ``attempt`` / ``improvement`` is the numbered steps, a ``feedback`` is the text
after ``Feedback: ``. The answer header of an improvement ("Updated Answer: ...") is derived from the prompt's last
line, so logs stay self-contained: training text can be rebuilt from a log without the task.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

SCHEMA_VERSION = 1
ROLES = ("attempt", "feedback", "improvement", "reference", "response")
#: correct: first attempt right (no edit); improved: fixed by the teacher or the policy's own feedback;
#: feedback_only: fixed in the end, but some improvement made no progress: only the turns up to the teacher's
#: first feedback are kept (as in TriPosT);
#: failed: the teacher could not fix it within max_updates; dropped: unusable, see ``reason``.
OUTCOMES = ("correct", "improved", "feedback_only", "failed", "dropped")
TRAINABLE_OUTCOMES = ("correct", "improved", "feedback_only")
_SHARD_NAME = re.compile(r"^iter_(\d{3,})\.jsonl$")


class LogError(ValueError):
    """A malformed interaction log line; the message starts with ``path:line:``."""


@dataclass(frozen=True)
class Turn:
    role: str
    text: str
    by: str
    #: the token ids a policy sampled for this turn (EOS included when it stopped), so RL trains on exactly them;
    #: None for text from anywhere else. Written only when set.
    tokens: tuple[int, ...] | None = None


@dataclass(frozen=True)
class Episode:
    """One rollout (or one preference / gold example) and what became of it."""

    id: str
    task: str
    iteration: int
    prompt: str
    turns: tuple[Turn, ...]
    outcome: str
    question_id: str | None = None
    bucket: str | None = None
    gold: str | None = None
    reason: str | None = None
    scores: dict[str, float | list[float]] = field(default_factory=dict)

    def to_json(self) -> str:
        record = {"schema": SCHEMA_VERSION, **asdict(self)}
        record["turns"] = [{k: v for k, v in asdict(turn).items() if k != "tokens" or v is not None}
                           for turn in self.turns]
        return json.dumps(record, ensure_ascii=False)


def shard_path(log_dir: str | Path, iteration: int) -> Path:
    return Path(log_dir) / f"iter_{iteration:03d}.jsonl"


def list_shards(log_dir: str | Path) -> dict[int, Path]:
    """``{iteration: path}`` of the complete shards in ``log_dir`` (temp files of an interrupted write excluded)."""
    log_dir = Path(log_dir)
    if not log_dir.is_dir():
        return {}
    found = {}
    for path in log_dir.iterdir():
        if m := _SHARD_NAME.match(path.name):
            found[int(m.group(1))] = path
    return dict(sorted(found.items()))


def write_shard(path: str | Path, episodes: Iterable[Episode]) -> Path:
    """Write a shard atomically. Refuses to overwrite: a shard is the permanent record of its iteration. Every
    episode is validated as ``read_shard`` will validate it, so a shard that was written can always be read."""
    path = Path(path)
    if path.exists():
        raise FileExistsError(f"{path}: interaction-log shard already exists; shards are never rewritten")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for index, episode in enumerate(episodes):
                line = episode.to_json()
                try:
                    parse_episode(line)
                except LogError as e:
                    raise LogError(f"{path}: episode {index} ({episode.id}) is invalid, nothing written: {e}") from None
                f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_shard(path: str | Path) -> list[Episode]:
    """Read and validate every line; the first bad line raises ``LogError`` naming ``path:line``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: interaction-log shard not found")
    episodes = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                episodes.append(parse_episode(line))
            except LogError as e:
                raise LogError(f"{path}:{lineno}: {e}") from None
    return episodes


def parse_episode(line: str) -> Episode:
    """Parse one JSON line into an Episode; raises ``LogError`` saying what is wrong (without the location)."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as e:
        raise LogError(f"not valid JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(record, dict):
        raise LogError(f"expected a JSON object, got {type(record).__name__}")
    version = record.pop("schema", None)
    if version != SCHEMA_VERSION:
        raise LogError(f"unsupported schema version {version!r} (this code reads version {SCHEMA_VERSION})")
    _check_fields(record)
    turns = tuple(_parse_turn(i, turn) for i, turn in enumerate(record.pop("turns")))
    episode = Episode(turns=turns, **record)
    _check_structure(episode)
    return episode


_REQUIRED = {"id": str, "task": str, "iteration": int, "prompt": str, "turns": list, "outcome": str}
_OPTIONAL = {"question_id": str, "bucket": str, "gold": str, "reason": str, "scores": dict}


def _check_fields(record: dict) -> None:
    for name, kind in _REQUIRED.items():
        if name not in record:
            raise LogError(f"missing required field {name!r}")
        if not isinstance(record[name], kind) or (kind is int and isinstance(record[name], bool)):
            raise LogError(f"field {name!r} must be {kind.__name__}, got {type(record[name]).__name__}")
    for name, kind in _OPTIONAL.items():
        if record.get(name) is not None and not isinstance(record[name], kind):
            raise LogError(f"field {name!r} must be {kind.__name__} or null, got {type(record[name]).__name__}")
    unknown = set(record) - set(_REQUIRED) - set(_OPTIONAL)
    if unknown:
        raise LogError(f"unknown field(s) {sorted(unknown)}; known: {sorted(_REQUIRED) + sorted(_OPTIONAL)}")
    if record["outcome"] not in OUTCOMES:
        raise LogError(f"outcome {record['outcome']!r} is not one of {list(OUTCOMES)}")
    if record["iteration"] < 0:
        raise LogError(f"iteration must be >= 0, got {record['iteration']}")
    record.setdefault("scores", {})
    if record["scores"] is None:
        record["scores"] = {}


def _parse_turn(index: int, turn: object) -> Turn:
    if not isinstance(turn, dict) or not {"role", "text", "by"} <= set(turn) <= {"role", "text", "by", "tokens"}:
        raise LogError(f"turn {index} must be an object with the keys 'role', 'text', 'by' (and optionally 'tokens')")
    if turn["role"] not in ROLES:
        raise LogError(f"turn {index}: role {turn['role']!r} is not one of {list(ROLES)}")
    if not isinstance(turn["text"], str) or not isinstance(turn["by"], str):
        raise LogError(f"turn {index}: 'text' and 'by' must be strings")
    tokens = turn.get("tokens")
    if tokens is not None:
        if not (isinstance(tokens, list) and all(isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in tokens)):
            raise LogError(f"turn {index}: 'tokens' must be a list of token ids (integers >= 0)")
        turn = {**turn, "tokens": tuple(tokens)}
    return Turn(**turn)


def _check_structure(episode: Episode) -> None:
    """TriPosT episodes alternate attempt/improvement and feedback; trainable ones end in feedback."""
    roles = [turn.role for turn in episode.turns]
    if not roles:
        raise LogError("episode has no turns")
    if roles[0] in ("reference", "response"):
        return  # PIT-style episodes: free-form reference / response sequences
    if roles[0] != "attempt":
        raise LogError(f"first turn must be an 'attempt', got {roles[0]!r}")
    for i, role in enumerate(roles):
        expected = "feedback" if i % 2 else ("attempt" if i == 0 else "improvement")
        if role != expected:
            raise LogError(f"turn {i} must be {expected!r} (turns alternate answer and feedback), got {role!r}")
    if episode.outcome in TRAINABLE_OUTCOMES and roles[-1] != "feedback":
        raise LogError(f"a {episode.outcome!r} episode must end with a feedback turn")
    if episode.outcome == "improved" and len(roles) < 4:
        raise LogError("an 'improved' episode needs at least attempt, feedback, improvement, feedback")
