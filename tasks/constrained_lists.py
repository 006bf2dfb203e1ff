"""An offline synthetic preference task with an exact score: number lists that must satisfy five constraints.

PIT's synthetic data is instruction following with a better response from a bigger model (reference pit.md §5);
its construction is not public. This stand-in keeps what matters for PIT, preferences whose quality is exactly
measurable, so "the improved response is better" needs no judge::

    x = "Write 4 odd numbers between 1 and 30 in increasing order, starting with 7."
    y = "7, 9, 11, 13"                      score 5/5
    y = "7, 9, 12"                          score 3/5 (wrong count, 12 is even)

The five checks: the response is a comma-separated list of integers in 1..30 (format); it has the asked count;
every number has the asked parity; the order is strictly increasing / decreasing as asked; it starts with the asked
number. ``score`` is the fraction satisfied (format failing fails everything). Preference pairs come from a noisy
writer: a perfect list with random corruptions, each breaking one constraint; the response with fewer broken
constraints is ``chosen`` (pairs with equal scores are not preferences and are skipped).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

LOW, HIGH = 1, 30
_PROMPT = re.compile(r"^Write (\d+) (odd|even) numbers between 1 and 30 in (increasing|decreasing) order, "
                     r"starting with (\d+)\.$")
CORRUPTIONS = ("count", "parity", "order", "start", "format")


@dataclass(frozen=True)
class Spec:
    """What an instruction asks for."""

    count: int
    parity: str  # "odd" | "even"
    order: str  # "increasing" | "decreasing"
    start: int

    @property
    def prompt(self) -> str:
        return (f"Write {self.count} {self.parity} numbers between 1 and 30 in {self.order} order, "
                f"starting with {self.start}.")

    @classmethod
    def parse(cls, prompt: str) -> Spec:
        match = _PROMPT.match(prompt.strip())
        if not match:
            raise ValueError(f"not a constrained-list instruction: {prompt!r}")
        return cls(int(match[1]), match[2], match[3], int(match[4]))

    def perfect(self) -> list[int]:
        step = 2 if self.order == "increasing" else -2
        return [self.start + i * step for i in range(self.count)]


def checks(spec: Spec, response: str) -> dict[str, bool]:
    """Each constraint and whether ``response`` satisfies it."""
    parts = [p.strip() for p in response.strip().split(",")]
    fmt = bool(parts) and all(re.fullmatch(r"\d+", p) for p in parts)
    numbers = [int(p) for p in parts] if fmt else []
    fmt = fmt and all(LOW <= n <= HIGH for n in numbers)
    if not fmt:
        return dict.fromkeys(CORRUPTIONS[::-1], False)
    pairs = list(zip(numbers, numbers[1:]))
    monotone = all(a < b for a, b in pairs) if spec.order == "increasing" else all(a > b for a, b in pairs)
    return {
        "format": True,
        "count": len(numbers) == spec.count,
        "parity": all(n % 2 == (1 if spec.parity == "odd" else 0) for n in numbers),
        "order": monotone,
        "start": numbers[0] == spec.start,
    }


def score(prompt: str, response: str) -> float:
    """The exact quality of ``response`` to ``prompt``: the fraction of the five constraints it satisfies."""
    return sum(checks(Spec.parse(prompt), response).values()) / len(CORRUPTIONS)


def random_spec(rng: random.Random) -> Spec:
    count, parity, order = rng.randint(3, 5), rng.choice(["odd", "even"]), rng.choice(["increasing", "decreasing"])
    span = 2 * (count - 1)
    first = [n for n in range(LOW, HIGH + 1) if n % 2 == (1 if parity == "odd" else 0)
             and LOW <= (n + span if order == "increasing" else n - span) <= HIGH]
    return Spec(count, parity, order, rng.choice(first))


def corrupt(spec: Spec, numbers: list[int], kind: str, rng: random.Random) -> list[int] | str:
    """Break one constraint of a list (``format`` returns text that is no list)."""
    numbers = list(numbers)
    step = 2 if spec.order == "increasing" else -2
    if kind == "count":
        longer = numbers + [numbers[-1] + step]
        return longer if LOW <= longer[-1] <= HIGH and (len(numbers) <= 2 or rng.random() < 0.5) else numbers[:-1]
    if kind == "parity":
        i = rng.randrange(1, len(numbers)) if len(numbers) > 1 else 0
        numbers[i] += 1 if numbers[i] < HIGH else -1
        return numbers
    if kind == "order":
        i = rng.randrange(len(numbers) - 1)
        numbers[i], numbers[i + 1] = numbers[i + 1], numbers[i]
        return numbers
    if kind == "start":
        shifted = [n + step for n in numbers]
        return shifted if all(LOW <= n <= HIGH for n in shifted) else [n - step for n in numbers]
    return " ".join(str(n) for n in numbers) + " and more"


def render(numbers: list[int] | str) -> str:
    return numbers if isinstance(numbers, str) else ", ".join(map(str, numbers))


def noisy_response(spec: Spec, rng: random.Random, broken: int) -> str:
    """A response from the noisy writer: the perfect list with ``broken`` distinct corruptions applied."""
    numbers: list[int] | str = spec.perfect()
    for kind in rng.sample(CORRUPTIONS[:4], k=min(broken, 4)):
        numbers = corrupt(spec, numbers, kind, rng)
    if broken > 4:
        numbers = corrupt(spec, numbers if isinstance(numbers, list) else spec.perfect(), "format", rng)
    return render(numbers)


def preference_pairs(n: int, seed: int = 0) -> list[tuple[str, str, str, float, float]]:
    """``n`` preference pairs ``(prompt, chosen, rejected, chosen_score, rejected_score)``, chosen strictly better."""
    rng = random.Random(f"constrained_lists/{seed}")
    pairs = []
    while len(pairs) < n:
        spec = random_spec(rng)
        a, b = (noisy_response(spec, rng, rng.choice([0, 0, 1, 1, 2, 2, 3, 4, 5])) for _ in range(2))
        sa, sb = score(spec.prompt, a), score(spec.prompt, b)
        if sa != sb:
            (w, sw), (l, sl) = sorted([(a, sa), (b, sb)], key=lambda t: -t[1])
            pairs.append((spec.prompt, w, l, sw, sl))
    return pairs
