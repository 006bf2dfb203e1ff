"""Word sorting (BIG-bench data, TriPosT's scripted rationales, feedback and improvements).

The gold rationale follows TriPosT's ``get_rationale.py``::

    (1) The first letter: "sioux"="s" (19), "purloin"="p" (16), "percept"="p" (16).
    (2) We now have: (16) ["purloin" ? "percept"] < (19) "sioux".
    (3) Now sort this subpart ["purloin" ? "percept"] by looking at their second letters: "purloin"="u" (21), ...
    (3.1) We now have: (5) "percept" < (21) "purloin".
    (3.2) Hence, we have "percept" < "purloin".
    (4) Hence, we have "percept" < "purloin" < "sioux".
    (Final response) So the answer is: percept purloin sioux.

Numbers: TriPosT's ``ord(c) - ord("a") + 1`` for every character (a–z are 1–26, ``'`` is −57, ``&`` −58), and a
word with no letter at the position is written ``"alum"="" (-97)``, below every character. This makes every
ordering exactly Python's ``sorted()`` (BIG-bench's targets), prefixes first. Identical words are joined with
``=`` and never sorted further. Unlike TriPosT, sibling sub-subparts get distinct labels ((6.2), (6.3), ...).

The rationale is deterministic, so the verifier compares an attempt step by step with the gold one (order inside
``[... ? ...]`` groups and letter lists does not matter) and explains the first difference by step type.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

from feedback.base import Dropped, Feedback, error_feedback
from tasks.base import BIGBENCH_DIR, Question, Task, correct_feedback, read_bigbench, resolve_data_path, split_steps

DEFAULT_DATA_PATH = f"{BIGBENCH_DIR}/word_sorting.json"
BUCKETS = ["2-3", "4-7", "8-10", "11-15", "16+"]
SEEN_BUCKETS = BUCKETS[:2]
MAX_SEEN_WORDS = 7
MISSING_RANK = -97  # a word that has ended sorts before any character (ord(c) - 96 >= -96)
QUESTION_PREFIX = "Sort the following words alphabetically:\nList: "

_UNITS = ["first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth", "eleventh",
          "twelfth", "thirteenth", "fourteenth", "fifteenth", "sixteenth", "seventeenth", "eighteenth", "nineteenth"]
_TENS = {2: "twent", 3: "thirt", 4: "fort", 5: "fift", 6: "sixt", 7: "sevent", 8: "eight", 9: "ninet"}


def ordinal(position: int) -> str:
    """0-based letter index -> English ordinal: 0 -> "first", 20 -> "twenty-first"."""
    n = position + 1
    if n < 20:
        return _UNITS[n - 1]
    if n >= 100:
        return f"{n}th"
    tens, units = divmod(n, 10)
    return _TENS[tens] + ("ieth" if units == 0 else "y-" + _UNITS[units - 1])


_POSITIONS = {ordinal(i): i for i in range(99)}


def letter_rank(word: str, position: int) -> tuple[str, int]:
    """The letter of ``word`` at ``position`` ("" past its end) and its number."""
    if position >= len(word):
        return "", MISSING_RANK
    return word[position], ord(word[position]) - ord("a") + 1


# --------------------------------------------------------------------------------------------------------------
# Gold rationale
# --------------------------------------------------------------------------------------------------------------


def _quote(words: list[str]) -> list[str]:
    return [f'"{word}"' for word in words]


def _subpart(words: list[str]) -> str:
    return "[" + " ? ".join(_quote(words)) + "]"


def _entries(words: list[str], position: int) -> str:
    return ", ".join(f'"{w}"="{letter}" ({rank})' for w in words for letter, rank in [letter_rank(w, position)])


def _group(words: list[str], position: int) -> list[tuple[int, list[str]]]:
    """Words grouped by their number at ``position``, ascending; input order kept inside a group."""
    groups: dict[int, list[str]] = {}
    for word in words:
        groups.setdefault(letter_rank(word, position)[1], []).append(word)
    return sorted(groups.items())


def _needs_sorting(words: list[str]) -> bool:
    return len(set(words)) > 1


def _groups_text(groups: list[tuple[int, list[str]]]) -> str:
    items = []
    for rank, words in groups:
        if _needs_sorting(words):
            items.append(f"({rank}) {_subpart(words)}")
        else:  # one word, or identical words that no letter can tell apart
            items.append(f"({rank}) " + " = ".join(_quote(words)))
    return " < ".join(items)


def _hence(words: list[str]) -> str:
    ordered = sorted(words)
    text = f'"{ordered[0]}"'
    for before, word in pairwise(ordered):
        text += f' {"=" if word == before else "<"} "{word}"'
    return text


def _solve_subpart(words: list[str], position: int, label: str) -> list[str]:
    def sort_step(position: int) -> str:
        return (f"Now sort this subpart {_subpart(words)} by looking at their {ordinal(position)} letters: "
                f"{_entries(words, position)}.")

    lines = [f"({label}) {sort_step(position)}"]
    groups, sub = _group(words, position), 1
    lines.append(f"({label}.{sub}) We now have: {_groups_text(groups)}.")
    while len(groups) == 1:  # all share this letter: look at the next one without nesting deeper
        position += 1
        groups = _group(words, position)
        lines.append(f"({label}.{sub + 1}) {sort_step(position)}")
        lines.append(f"({label}.{sub + 2}) We now have: {_groups_text(groups)}.")
        sub += 2
    for _, group in groups:
        if _needs_sorting(group):
            sub += 1
            lines += _solve_subpart(group, position + 1, f"{label}.{sub}")
    lines.append(f"({label}.{sub + 1}) Hence, we have {_hence(words)}.")
    return lines


def solve(words: list[str]) -> str:
    """TriPosT's scripted rationale for sorting ``words``."""
    groups = _group(words, 0)
    lines = [f"(1) The first letter: {_entries(words, 0)}.", f"(2) We now have: {_groups_text(groups)}."]
    label = 3
    for _, group in groups:
        if _needs_sorting(group):
            lines += _solve_subpart(group, 1, str(label))
            label += 1
    lines.append(f"({label}) Hence, we have {_hence(words)}.")
    lines.append(f"(Final response) So the answer is: {' '.join(sorted(words))}.")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------------------
# Parsing steps (gold and attempts alike)
# --------------------------------------------------------------------------------------------------------------

_FIRST = re.compile(r"^The (?P<ord>[\w-]+) letter: (?P<body>.*?)\.?$")
_SORT = re.compile(r"^Now sort this subpart (?P<sub>\[.*?\]) (?:again )?by looking at their (?P<ord>[\w-]+) letters: "
                   r"(?P<body>.*?)\.?$")
_GROUPS = re.compile(r"^We now have: (?P<body>.*?)\.?$")
_HENCE = re.compile(r"^Hence, we have (?P<body>.*?)\.?$")
_ANSWER = re.compile(r"the answer is:\s*(?P<body>.*?)\s*$")
_ENTRY = re.compile(r'"(?P<word>[^"]*)"\s*=\s*"(?P<letter>[^"]*)"\s*\((?P<rank>-?\d+)\)')
_ITEM = re.compile(r'\((?P<rank>-?\d+)\)\s*(?P<group>\[[^\]]*\]|"[^"]*"(?:\s*=\s*"[^"]*")*)')
_QUOTED = re.compile(r'"([^"]*)"')


def _unnamed(pattern: str) -> str:
    return re.sub(r"\(\?P<\w+>", "(?:", pattern)


_ENTRIES = re.compile(_unnamed(f"{_ENTRY.pattern}(?:\\s*,\\s*{_ENTRY.pattern})*"))  # a whole letter list
_ITEMS = re.compile(_unnamed(f"{_ITEM.pattern}(?:\\s*<\\s*{_ITEM.pattern})*"))  # a whole "We now have" list
_ORDERED = re.compile(r'"[^"]*"(?:\s*[<=]\s*"[^"]*")*')


@dataclass(frozen=True)
class _Entry:
    text: str
    word: str
    letter: str
    rank: int


@dataclass(frozen=True)
class _Item:
    text: str
    rank: int
    words: tuple[str, ...]
    kind: str  # "word" (one word or identical words joined by "="), or "open" ([... ? ...], still to sort)


@dataclass(frozen=True)
class _Step:
    label: str
    kind: str  # "letters", "groups", "hence", "final" or "invalid"
    content: str  # the line without its label
    body: str = ""  # the list part of the content, verbatim
    subpart: tuple[str, ...] | None = None  # letters: the words sorted (None for "The first letter")
    subpart_text: str = ""
    position: int | None = None  # letters: 0-based letter index (None if the ordinal is unknown)
    position_text: str = ""
    entries: tuple[_Entry, ...] = ()
    items: tuple[_Item, ...] = ()
    words: tuple[str, ...] = ()  # hence / final
    unsorted: str = ""  # hence: a "?", "[" or ">" left in it

    def key(self) -> tuple:
        """What must match the gold step (orders inside a subpart or a letter list do not matter)."""
        if self.kind == "letters":
            subpart = None if self.subpart is None else sorted(self.subpart)
            return self.kind, subpart, self.position, sorted((e.word, e.letter, e.rank) for e in self.entries)
        if self.kind == "groups":
            return self.kind, [(i.rank, sorted(i.words), i.kind) for i in self.items]
        if self.kind in ("hence", "final"):
            return self.kind, self.words, self.unsorted
        return self.kind, self.content


def parse_step(label: str, line: str) -> _Step:
    content = line[len(label) + 2 :].strip()
    if label == "Final response":
        if match := _ANSWER.search(content):
            body = match["body"]
            words = tuple(body.removesuffix(".").split())
            return _Step(label, "final", content, content[match.start() :], words=words)
        return _Step(label, "invalid", content)
    if (match := _FIRST.match(content)) or (match := _SORT.match(content)):
        body = match["body"]
        if not _ENTRIES.fullmatch(body):
            return _Step(label, "invalid", content)
        entries = tuple(_Entry(m.group(0), m["word"], m["letter"], int(m["rank"])) for m in _ENTRY.finditer(body))
        sub = match.groupdict().get("sub")
        subpart = None if sub is None else tuple(_QUOTED.findall(sub))
        return _Step(label, "letters", content, body, subpart=subpart, subpart_text=sub or "",
                     position=_POSITIONS.get(match["ord"].lower()), position_text=match["ord"], entries=entries)
    if match := _GROUPS.match(content):
        body = match["body"]
        if not _ITEMS.fullmatch(body):
            return _Step(label, "invalid", content)
        items = tuple(
            _Item(m.group(0), int(m["rank"]), tuple(_QUOTED.findall(m["group"])),
                  "open" if m["group"].startswith("[") else "word")
            for m in _ITEM.finditer(body)
        )
        return _Step(label, "groups", content, body, items=items)
    if match := _HENCE.match(content):
        body = match["body"]
        rest = _QUOTED.sub("", body)
        unsorted = next((c for c in rest if c in "?[]>"), "")  # worth a specific reason even if malformed
        if not unsorted and not _ORDERED.fullmatch(body):
            return _Step(label, "invalid", content)
        return _Step(label, "hence", content, body, words=tuple(_QUOTED.findall(body)), unsorted=unsorted)
    return _Step(label, "invalid", content)


def rationale_steps(attempt: str) -> list[tuple[str, str]]:
    """The attempt's steps up to and including its first ``(Final response)``; anything after it is ignored."""
    steps = split_steps(attempt)
    ends = [i for i, (label, _) in enumerate(steps) if label == "Final response"]
    return steps[: ends[0] + 1] if ends else steps


def gold_steps(words: list[str]) -> list[_Step]:
    return [parse_step(label, line) for label, line in split_steps(solve(words))]


def same_step(step: _Step, gold: _Step) -> bool:
    return step.label == gold.label and step.key() == gold.key()


# --------------------------------------------------------------------------------------------------------------
# Explaining the first difference from the gold rationale
# --------------------------------------------------------------------------------------------------------------

Error = tuple[str, str]  # (segment quoted from the step, reason)


def _word_problem(
    word: str, expected: Counter[str], words: list[str], scope: Collection[str], where: str
) -> str | None:
    """Why ``word`` cannot appear here (not in the question, not in this scope, or one time too many)."""
    if expected[word] > 0:
        expected[word] -= 1
        return None
    if word not in words:
        return f'"{word}" is not in the list of words provided by the question statement: {" ".join(words)}'
    if word not in scope:
        return f'"{word}" is not in {where}'
    return f'"{word}" is duplicated'


def _missing(expected: Counter[str]) -> str:
    return " ".join(sorted(expected.elements()))


def _explain_letters(step: _Step, gold: _Step, steps: list[_Step], words: list[str]) -> Error | None:
    lead = f"The {step.position_text} letter"
    if step.subpart is not None:
        lead = f"by looking at their {step.position_text} letters"
    if gold.subpart is None and (step.subpart is not None or step.position != 0):
        return lead, "you should start sorting from the first letter of the words"
    if gold.subpart is not None and step.subpart is None:
        return lead, "the first letters have already been sorted in step (1)"
    if step.subpart is not None and gold.subpart is not None and sorted(step.subpart) != sorted(gold.subpart):
        listing = next(s for s in reversed(steps) if s.kind == "groups" and
                       any(sorted(i.words) == sorted(gold.subpart) for i in s.items))  # its parent's grouping
        if any(i.kind == "open" and sorted(i.words) == sorted(step.subpart) for i in listing.items):
            return step.subpart_text, f"subparts are sorted in ascending order, so {gold.subpart_text} comes first"
        return step.subpart_text, f"this subpart is not amongst the unsorted subparts in step ({listing.label})"
    if step.position is None:
        return lead, "it is not a valid letter position"
    if step.position > gold.position:
        return lead, f"the {ordinal(gold.position)} letter of {gold.subpart_text} has not been sorted yet"
    if step.position < gold.position:
        checked = next(s for s in reversed(steps) if s.kind == "letters" and s.position == step.position
                       and set(gold.subpart or ()) <= set(s.subpart or words))  # an ancestor of this subpart
        nth = ordinal(step.position)
        return lead, f"the {nth} letter of {gold.subpart_text} has already been checked in step ({checked.label})"
    scope = list(gold.subpart) if gold.subpart is not None else words
    expected, truth = Counter(scope), {e.word: e for e in gold.entries}
    nth = ordinal(gold.position)
    for entry in step.entries:
        if problem := _word_problem(entry.word, expected, words, scope, f"the subpart {gold.subpart_text}"):
            return entry.text, problem
        true = truth[entry.word]
        if entry.letter != true.letter and true.letter:
            return entry.text, f'the {nth} letter of "{entry.word}" should be "{true.letter}"'
        if entry.letter != true.letter:
            return entry.text, f'"{entry.word}" has no {nth} letter, so its letter should be ""'
        if entry.rank != true.rank and true.letter:
            return entry.text, f'the alphabetical order for the character "{true.letter}" should be {true.rank}'
        if entry.rank != true.rank:
            return entry.text, f"a word without a {nth} letter comes first, so its number should be {MISSING_RANK}"
    if +expected:
        where = f"the subpart {gold.subpart_text}"
        if gold.subpart is None:
            where = "the list of words provided by the question statement"
        return step.body, f'you missed the words "{_missing(expected)}", which are in {where}'
    return None


def _explain_groups(step: _Step, steps: list[_Step], words: list[str]) -> Error | None:
    previous = steps[-1]  # the letters step it groups (verified equal to the gold one)
    number = {e.word: e.rank for e in previous.entries}
    expected, ranks = Counter(e.word for e in previous.entries), []
    for item in step.items:
        for word in item.words:
            if problem := _word_problem(word, expected, words, list(number), f"step ({previous.label})"):
                return item.text, problem
            if number[word] != item.rank:
                return item.text, f'according to step ({previous.label}), "{word}" has the number ({number[word]})'
        if item.kind == "open" and len(item.words) == 1:
            return item.text, "it has only a single word, so it is not a subpart that needs further sorting"
        if item.kind == "open" and not _needs_sorting(list(item.words)):
            return item.text, "these words are identical, so they need no further sorting"
        if item.kind == "word" and _needs_sorting(list(item.words)):
            return item.text, f'"{item.words[0]}" and "{item.words[1]}" are different words, so they need sorting'
        if item.rank in ranks:
            return item.text, f"words with the number ({item.rank}) should be grouped together"
        if ranks and item.rank < ranks[-1]:
            return item.text, (f"words are not sorted in ascending order, so words with ({item.rank}) should come "
                               f"before words with ({ranks[-1]})")
        ranks.append(item.rank)
    if +expected:
        return step.body, f'according to step ({previous.label}), the words "{_missing(expected)}" are missing'
    return None


def _explain_hence(step: _Step, gold: _Step, steps: list[_Step], words: list[str]) -> Error | None:
    if step.unsorted == ">":
        return step.body, "you should always sort in ascending order, from smallest to largest"
    if step.unsorted:
        return step.body, 'this subpart has not been sorted completely yet (it still contains "?")'
    parent = next((s for s in steps if s.label == gold.label.rpartition(".")[0]), None)
    where = f"the subpart {parent.subpart_text}" if parent else "the list of words"
    expected = Counter(gold.words)
    for word in step.words:
        if problem := _word_problem(word, expected, words, list(gold.words), where):
            return f'"{word}"', problem
    if +expected:
        return step.body, f'you missed the words "{_missing(expected)}", which are in {where}'
    for before, word in pairwise(step.words):
        if word < before:
            pair = re.search(f'"{re.escape(before)}"\\s*[<=]\\s*"{re.escape(word)}"', step.body)
            decided = next((s for s in reversed(steps) if s.kind == "groups" and _separated(s, before, word)), None)
            where = f"according to step ({decided.label}), " if decided else ""
            return pair.group(0) if pair else step.body, f'{where}"{word}" comes before "{before}"'
    return None


def _separated(step: _Step, a: str, b: str) -> bool:
    """Whether the groups ``step`` puts ``a`` and ``b`` in different items (so it decided their order)."""
    where = {word: i for i, item in enumerate(step.items) for word in item.words}
    return a in where and b in where and where[a] != where[b]


def _explain_kind(step: _Step, gold: _Step) -> Error:
    """The attempt took a different kind of step than the procedure does next."""
    if gold.kind == "letters" and gold.subpart is None:
        return step.content, "you should start sorting from the first letter of the words"
    if gold.kind == "letters":
        reason = f"the subpart {gold.subpart_text} has not been sorted by its {ordinal(gold.position)} letters yet"
        return step.body or step.content, reason
    if gold.kind == "groups":
        return step.body or step.content, "the words of the previous step have not been grouped by their numbers yet"
    if gold.kind == "hence":
        return step.subpart_text or step.content, "all subparts have already been sorted, so combine them now"
    return step.content, "all words have already been sorted, so this step should give the final response"


def explain(step: _Step, gold: list[_Step], index: int, words: list[str]) -> Error:
    """Segment and reason for attempt ``step``, which differs from ``gold[index]`` (earlier steps match)."""
    expected, before = gold[index], gold[:index]
    if step.kind == "invalid":
        if step.label == "Final response":
            return step.content, 'it does not state the answer as "So the answer is: ..."'
        return step.content, "it is not a valid sorting step"
    if step.kind != expected.kind:
        return _explain_kind(step, expected)
    error = None
    if step.kind == "letters":
        error = _explain_letters(step, expected, before, words)
    elif step.kind == "groups":
        error = _explain_groups(step, before, words)
    elif step.kind == "hence":
        error = _explain_hence(step, expected, before, words)
    elif step.words != before[-1].words:
        error = step.body, f"this answer is inconsistent with the result in step ({before[-1].label})"
    if error is None and step.label != expected.label:
        return f"({step.label})", f"this step should be numbered ({expected.label})"
    return error or (step.content, "it does not follow from the previous steps")


# --------------------------------------------------------------------------------------------------------------
# The task
# --------------------------------------------------------------------------------------------------------------


def _bucket(num_words: int) -> str:
    for bucket, top in zip(BUCKETS, (3, 7, 10, 15)):
        if num_words <= top:
            return bucket
    return BUCKETS[-1]


def question_words(question: Question) -> list[str]:
    match = re.search(r"List:(.*)", question.question)
    if match is None:
        raise ValueError(f"question {question.id} has no 'List:' line")
    return match.group(1).split()


def load_examples(source: Path | str) -> list[tuple[int, list[str]]]:
    """``(index, words)`` of every BIG-bench example, checked: the target must be the input sorted. ``source`` is
    a task.json or a hub copy in BIG-bench's Hugging Face layout (``hf:<name>/<config>``)."""
    rows = []
    for index, (where, example) in enumerate(read_bigbench(source, "--data.init_args.task.init_args.data_path")):
        if not (isinstance(example, dict) and isinstance(example.get("input"), str)
                and isinstance(example.get("target"), str)):
            raise ValueError(f"{where}: expected an object with string 'input' and 'target'")  # noqa: TRY004
        # a hub copy's input is the whole question: "Sort the following words alphabetically: List: b a\nSorted:"
        text = example["input"]
        words = (text.split("List:", 1)[1].splitlines()[0] if "List:" in text else text).split()
        if not words or any('"' in word for word in words):
            raise ValueError(f"{where}: expected a non-empty list of words without '\"'")
        if example["target"].split() != sorted(words):
            raise ValueError(f"{where}: the target is not the input words in sorted order")
        rows.append((index, words))
    return rows


class WordSorting(Task):
    """BIG-bench word sorting with TriPosT's scripted rationales, verifier and improvements.

    Seen lists have at most 7 words (train and seen test); unseen lists have 8 or more (test only). The default
    sizes are TriPosT's: 473 training lists (its 433 train + 40 validation), 127 seen and 252 unseen test lists.

    Args:
        data_path: BIG-bench's ``word_sorting`` task.json (default: the copy shipped in ``tasks/data/bigbench``; a
            relative path is resolved from the repository root), or ``hf:<name>/<config>`` for a hub copy in
            BIG-bench's Hugging Face layout (e.g. ``hf:tasksource/bigbench/word_sorting``; train, then validation).
        num_train: training lists, drawn from the seen (<= 7 words) examples.
        num_test_seen: seen test lists, disjoint from the training lists.
        num_test_unseen: unseen (8+ words) test lists.
        seed: sampling seed; the same arguments always give the same questions.
    """

    name = "word_sorting"

    def __init__(self, data_path: str = DEFAULT_DATA_PATH, num_train: int = 473, num_test_seen: int = 127,
                 num_test_unseen: int = 252, seed: int = 0) -> None:
        self.data_path = resolve_data_path(data_path)
        rows = load_examples(self.data_path)
        seen = [row for row in rows if len(row[1]) <= MAX_SEEN_WORDS]
        unseen = [row for row in rows if len(row[1]) > MAX_SEEN_WORDS]
        if min(num_train, num_test_seen, num_test_unseen) < 0:
            raise ValueError("split sizes must be >= 0")
        if num_train + num_test_seen > len(seen) or num_test_unseen > len(unseen):
            raise ValueError(f"{self.data_path} has {len(seen)} seen and {len(unseen)} unseen lists; asked for "
                             f"{num_train} + {num_test_seen} seen and {num_test_unseen} unseen")
        rng = random.Random(f"{self.name}/{seed}")  # str seeds are stable across processes
        rng.shuffle(seen)
        rng.shuffle(unseen)
        test = sorted(seen[:num_test_seen] + unseen[:num_test_unseen])
        self._splits = {
            "train": [self._question(*row) for row in seen[num_test_seen : num_test_seen + num_train]],
            "test": [self._question(*row) for row in test],
        }

    @staticmethod
    def _question(index: int, words: list[str]) -> Question:
        bucket = _bucket(len(words))
        return Question(f"ws-{index:04d}", QUESTION_PREFIX + " ".join(words), " ".join(sorted(words)), bucket,
                        bucket in SEEN_BUCKETS)

    def questions(self, split: str) -> list[Question]:
        if split not in self._splits:
            raise ValueError(f"unknown split {split!r}; expected 'train' or 'test'")
        return list(self._splits[split])

    def buckets(self) -> list[str]:
        return list(BUCKETS)

    def gold_rationale(self, question: Question) -> str:
        return solve(question_words(question))

    def slipped_rationale(self, question: Question, rng: random.Random) -> str:
        """The gold rationale with two neighbours swapped in its last ordering step, carried into the answer."""
        lines = self.gold_rationale(question).splitlines()
        words = question.answer.split()
        if len(words) < 2:
            return "\n".join(lines)  # nothing to swap: the demo is a correct attempt
        i = rng.randrange(len(words) - 1)
        swapped = words[:i] + [words[i + 1], words[i]] + words[i + 2 :]
        lines[-2] = lines[-2][: lines[-2].index('"')] + " < ".join(f'"{w}"' for w in swapped) + "."
        lines[-1] = lines[-1][: lines[-1].index(":") + 1] + " " + " ".join(swapped) + "."
        return "\n".join(lines)

    def extract_answer(self, attempt: str) -> str | None:
        for label, line in rationale_steps(attempt):
            if label == "Final response" and (match := _ANSWER.search(line)):
                words = match["body"].removesuffix(".").split()
                return " ".join(words) if words else None
        return None

    def is_correct(self, question: Question, attempt: str) -> bool:
        """Gold answer and TriPosT's ``has_valid_content``: no "Hence" step still holds a "?"."""
        hence = [line for _, line in rationale_steps(attempt) if "Hence" in line]
        return self.extract_answer(attempt) == question.answer and not any("?" in line for line in hence)

    def verify(self, question: Question, attempt: str) -> Feedback:
        words, steps = question_words(question), rationale_steps(attempt)
        if not steps:
            raise ValueError("the attempt has no numbered steps")
        gold = gold_steps(words)
        index = first_difference(steps, gold)
        if index is not None:
            label = steps[index][0]
            segment, reason = explain(parse_step(label, steps[index][1]), gold, index, words)
            return error_feedback(steps[index - 1][0] if index else None, label, segment or f"({label})", reason)
        if steps[-1][0] != "Final response":
            raise ValueError("the attempt ends without a (Final response) step")
        return Feedback(text=correct_feedback(attempt), correct=True)

    def scripted_improvement(self, question: Question, attempt: str, feedback: Feedback) -> str | Dropped:
        steps, gold_text = rationale_steps(attempt), solve(question_words(question))
        gold = [parse_step(label, line) for label, line in split_steps(gold_text)]
        first = first_difference(steps, gold)
        # labels can repeat in model output, so prefer the first wrong step when it carries the named label
        if first is not None and steps[first][0] == feedback.step:
            index = first
        else:
            index = next((i for i, (label, _) in enumerate(steps) if label == feedback.step), None)
        if index is None:
            return Dropped(f"the attempt has no step ({feedback.step})")
        if first is not None and first < index:
            return Dropped(f"step ({steps[first][0]}) before the wrong step is itself wrong")
        return "\n".join([line for _, line in steps[:index]] + gold_text.splitlines()[index:])


def first_difference(steps: list[tuple[str, str]], gold: list[_Step]) -> int | None:
    """Index of the first attempt step that differs from the gold rationale (None if all match)."""
    # both end at their first "(Final response)", so an attempt cannot outrun the gold steps without differing
    for index, (label, line) in enumerate(steps):
        if not same_step(parse_step(label, line), gold[index]):
            return index
    return None
