"""From interaction-log episodes to TriPosT training examples (reference §2.3).

An edited trajectory ``Q, att_1, fb_1, ..., att_k, fb_k(correct)`` is cut into single-step examples:
``k-1`` *improvement* examples ``Q / Answer: att_i / Feedback: fb_i / Updated Answer: att_{i+1}`` and one
*non-improvement* example ``Q / Answer: att_k / Feedback: fb_k``. Directly-correct and feedback-only episodes are
non-improvement examples as they are. Gold rationales become *gold* examples. Re-balancing then keeps every
improvement example and samples non-improvement and gold examples so that the mix is ``r : 1 : 1``.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from datamodules.interaction_log import TRAINABLE_OUTCOMES, Episode

IMPROVEMENT, NON_IMPROVEMENT, GOLD = "improvement", "non_improvement", "gold"


@dataclass(frozen=True)
class Example:
    """One training text in three segments (tokenised as one text; each token weighted by its segment):

    * ``prompt``: ``Q: ...\\nAnswer: Let's think step by step.{info}\\n`` (learned only if ``learn_prompt``);
    * ``answer``: the attempt's steps and a newline (weight 1; ``attempt_correct`` is False for an attempt the
      teacher found wrong: the first attempts of improvement and feedback-only examples);
    * ``self_improve``: ``Feedback: ...`` and, for improvement examples, ``\\nUpdated Answer: ...\\n{steps}``;
      weight ``w`` (TriPosT's ``self_improve_section_weight``) unless ``weighted`` is False (directly-correct
      model outputs and gold demos are learned with weight 1, as in the reference code). EOS follows it.
    """

    kind: str
    prompt: str
    answer: str
    self_improve: str
    weighted: bool
    source_id: str
    attempt_correct: bool = True

    @property
    def text(self) -> str:
        return self.prompt + self.answer + self.self_improve


def updated_header(prompt: str) -> str:
    """``Updated Answer: Let's think step by step.{info}`` from the prompt's last line (``Answer: ...``)."""
    last_line = prompt.rstrip("\n").rsplit("\n", 1)[-1]
    if not last_line.startswith("Answer:"):
        raise ValueError(f"prompt must end with an 'Answer: ...' line, got {last_line!r}")
    return "Updated " + last_line


def improvement_section(prompt: str, feedback: str, improvement: str) -> str:
    """What follows an attempt in an improvement example: ``Feedback: ...``, ``Updated Answer: ...``, the steps."""
    return f"Feedback: {feedback}\n{updated_header(prompt)}\n{improvement}"


def split_turns(episode: Episode) -> list[Example]:
    """Cut one trainable episode into TriPosT examples; untrainable outcomes give none."""
    if episode.outcome not in TRAINABLE_OUTCOMES:
        return []
    answers = [turn.text.strip() for turn in episode.turns[0::2]]
    feedbacks = [turn.text.strip() for turn in episode.turns[1::2]]
    examples = []
    for i in range(len(answers) - 1):  # improvement turns
        self_improve = improvement_section(episode.prompt, feedbacks[i], answers[i + 1])
        examples.append(
            Example(IMPROVEMENT, episode.prompt, answers[i] + "\n", self_improve, True, episode.id, attempt_correct=False)
        )
    last = Example(
        NON_IMPROVEMENT,
        episode.prompt,
        answers[-1] + "\n",
        f"Feedback: {feedbacks[-1]}",
        weighted=episode.outcome != "correct" or len(answers) > 1,
        source_id=episode.id,
        attempt_correct=episode.outcome != "feedback_only",
    )
    return examples + [last]


def gold_example(prompt: str, rationale: str, correct_feedback: str, source_id: str) -> Example:
    """A gold rationale with TriPosT's "correct" feedback appended; weight 1 everywhere ("this is gold")."""
    return Example(GOLD, prompt, rationale.strip() + "\n", f"Feedback: {correct_feedback}", False, source_id)


def rebalance(
    improvement: Sequence[Example],
    non_improvement: Sequence[Example],
    gold: Sequence[Example],
    ratio: float,
    seed: int,
) -> list[Example]:
    """TriPosT's re-balance: all improvement examples, ``min(ceil(n_imp / r), available)`` non-improvement ones
    sampled uniformly, and as many gold demos as non-improvement ones; ``ratio <= 0`` keeps all non-improvement
    examples (no re-balancing). Deterministic in ``seed``; the result is shuffled."""
    rng = random.Random(seed)
    n_non = len(non_improvement)
    if ratio > 0:
        n_non = min(math.ceil(len(improvement) / ratio), len(non_improvement))
    chosen_non = rng.sample(list(non_improvement), n_non)
    chosen_gold = rng.sample(list(gold), min(n_non, len(gold)))
    mixed = list(improvement) + chosen_non + chosen_gold
    rng.shuffle(mixed)
    return mixed


def count_kinds(examples: Sequence[Example]) -> Counter:
    return Counter(example.kind for example in examples)
