"""The word-sorting rationale language: TriPosT's gold rationale, parsing steps, and explaining an attempt's first
difference from the gold one (used by ``tasks.word_sorting.WordSorting``'s verifier and scripted improvements).

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

import re
from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass
from itertools import pairwise

from tasks.base import split_steps

MISSING_RANK = -97  # a word that has ended sorts before any character (ord(c) - 96 >= -96)
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
ANSWER = re.compile(r"the answer is:\s*(?P<body>.*?)\s*$")  # the final response's words
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
        if match := ANSWER.search(content):
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


def first_difference(steps: list[tuple[str, str]], gold: list[_Step]) -> int | None:
    """Index of the first attempt step that differs from the gold rationale (None if all match)."""
    # both end at their first "(Final response)", so an attempt cannot outrun the gold steps without differing
    for index, (label, line) in enumerate(steps):
        if not same_step(parse_step(label, line), gold[index]):
            return index
    return None
