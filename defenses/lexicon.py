"""A request lexicon learned from traffic: which words name a request's command, and which
only wrap it in chat.

After the log-template miners (He et al., 2017, "Drain: An Online Log Parsing Approach with
Fixed Depth Tree"): a provider's request classifier does not know how its users write; it
tells the constant words of its traffic from the variable ones by how often and where they
occur, in the traffic it is handed (a detector's calibration traffic, or the window it is
scoring). Only the protocol's own markers are given, since they are the API and not anyone's
habit: `sim.tasks.EXPLAIN` asks for the reasoning, `sim.grading.GRADE` for a grade.

- tokens: the whitespace-separated words, with a trailing run of `?` and `!` split off as a
  token of its own;
- head words: the first word after any markers, kept when it opens at least `min_share` of
  the prompts (and `min_count` of them);
- a chat prefix is a head word that is followed by another head word in at least `cover` of
  its prompts (a greeting before a request: `hey calc 3+4`); every other head word is a
  command (followed by its operands: `calc 3+4`). A command that is a swap of the letters of
  a more frequent one is a typo of it (the same number of each letter);
- a chat suffix is a last word, seen `min_count` times, that ends the requests of at least
  two commands with none of them more than `concentration` of its uses (`... thx`); a
  command's own last words (the attribute that ends `kb x city`) end that command's only.

A request's command is the first of its words that is a learned command or a typo of one,
else `other`: a command never seen in the lexicon's traffic is not told apart.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property

from sim.grading import GRADE
from sim.tasks import EXPLAIN

MARKERS = frozenset({EXPLAIN.strip(), GRADE.strip()})
PUNCT = "?!"
OTHER = "other"
LENGTH_BUCKET = 4  # characters per question-length bucket


def tokens(prompt: str) -> list[str]:
    out = []
    for w in prompt.split():
        core = w.rstrip(PUNCT)
        if core:
            out.append(core)
        if core != w:
            out.append(w[len(core):])
    return out


def bucket(words: list[str], length_bucket: int = LENGTH_BUCKET) -> int:
    """The length bucket of a question's words from its command word on (`Lexicon.parse`)."""
    return len(" ".join(words)) // length_bucket


def _letters(word: str) -> str:
    return "".join(sorted(word))


@dataclass(frozen=True)
class Lexicon:
    commands: tuple[str, ...]  # most frequent first
    prefixes: frozenset[str]
    suffixes: frozenset[str]

    @classmethod
    def fit(cls, prompts: Iterable[str], min_share: float = 0.005, min_count: int = 2, cover: float = 0.5,
            concentration: float = 0.8) -> Lexicon:
        bare = [[w for w in tokens(p) if w not in MARKERS] for p in prompts]
        bare = [t for t in bare if t]
        first = Counter(t[0] for t in bare)
        floor = max(min_count, min_share * len(bare))
        heads = {w for w, c in first.items() if c >= floor}
        followed = Counter(t[0] for t in bare if len(t) > 1 and t[0] in heads and t[1] in heads)
        prefixes = frozenset(w for w in heads if followed[w] >= cover * first[w])
        commands: list[str] = []
        for w in sorted(heads - prefixes, key=lambda w: (-first[w], w)):
            if all(_letters(w) != _letters(c) for c in commands):
                commands.append(w)
        known = set(commands)
        ends: dict[str, Counter] = {}
        for t in bare:
            i = 0
            while i < len(t) - 1 and t[i] in prefixes:
                i += 1
            if len(t) - i > 1 and t[i] in known:
                ends.setdefault(t[-1], Counter())[t[i]] += 1
        suffixes = frozenset(w for w, by in ends.items() if w not in known and sum(by.values()) >= min_count
                             and len(by) >= 2 and max(by.values()) <= concentration * sum(by.values()))
        return cls(tuple(commands), prefixes, suffixes)

    def parse(self, prompt: str) -> tuple[str, list[str], bool]:
        """(command, the words from the command word on, whether that word was a typo), with
        `?` and `!` read as spaces; (`other`, every word, False) when no word is a command."""
        words = prompt.replace("?", " ").replace("!", " ").split()
        for i, w in enumerate(words):
            if w in self._set:
                return w, words[i:], False
        for i, w in enumerate(words):
            c = self._typos.get(_letters(w))
            if c is not None:
                return c, words[i:], True
        return OTHER, words, False

    def command(self, prompt: str) -> str:
        return self.parse(prompt)[0]

    def cell(self, prompt: str, length_bucket: int = LENGTH_BUCKET) -> tuple[str, int]:
        """(command, length bucket of the question from its command word on): the difficulty
        proxy, since more operations, rows, slots or hops make longer questions."""
        cmd, rest, _ = self.parse(prompt)
        return cmd, bucket(rest, length_bucket)

    def wrapped(self, prompt: str) -> bool:
        """Whether a chat word opens or closes the request."""
        t = tokens(prompt)
        return bool(t) and (t[0] in self.prefixes or t[-1] in self.suffixes)

    @cached_property
    def _set(self) -> frozenset[str]:
        return frozenset(self.commands)

    @cached_property
    def _typos(self) -> dict[str, str]:
        return {_letters(c): c for c in self.commands}
