"""Deduplication and decontamination of accepted blueprints.

Two blueprints are duplicates when they make the same writes for the same user (reads are left to the
agent, so they do not tell tasks apart), or when their instructions are near-identical: the Jaccard
similarity of their word 3-gram sets reaches a threshold. A blueprint that writes nothing (an information
request, a refusal) has no write key and is compared by its instruction alone.

Thresholds, measured on tau-bench's 500 retail train tasks, whose instructions are short and templated:
of their 124,750 pairs, 99.7% score under 0.2; the 20 pairs at 0.4 or more (up to 0.63) all share a user,
typically the same request with another persona. Deduplication drops only near-copies (0.8): the write
key already catches a task repeated in other words. Decontamination is stricter (0.5), because a leaked
benchmark task costs more than a lost blueprint; it also rejects a blueprint whose writes equal an
excluded task's.

Call `Decontaminator.check` first and `Deduplicator.check` on what it lets through: the deduplicator
keeps every blueprint it passes, so that later ones are compared with it.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import ValidationError

from apigen_mt.simulators.domain import Domain
from apigen_mt.simulators.types import Blueprint

DEDUP_THRESHOLD = 0.8
DECONTAMINATION_THRESHOLD = 0.5
NGRAM = 3

_WORD = re.compile(r"\w+")


def write_tool_names(domain: Domain) -> frozenset[str]:
    """The names of the domain's tools that may change the database."""
    return frozenset(name for name, bound in domain.toolkit.tools().items() if bound.spec.writes)


def _writes(blueprint: Blueprint, writes: frozenset[str]) -> list[str]:
    """The blueprint's write calls as canonical JSON, sorted: the same set in any order gives the same list."""
    return sorted(
        json.dumps({"name": call.name, "arguments": call.arguments}, sort_keys=True)
        for call in blueprint.actions
        if call.name in writes
    )


def action_key(blueprint: Blueprint, writes: frozenset[str]) -> str | None:
    """The user and the set of write calls, as one string; None for a blueprint that writes nothing."""
    calls = _writes(blueprint, writes)
    if not calls:
        return None
    return json.dumps({"user_id": blueprint.user_id, "writes": calls})


def ngrams(text: str, n: int = NGRAM) -> frozenset[tuple[str, ...]]:
    """The word n-grams of `text`, lower-cased; a text shorter than n words is one gram of all its words."""
    words = [word.lower() for word in _WORD.findall(text)]
    if len(words) <= n:
        return frozenset({tuple(words)}) if words else frozenset()
    return frozenset(tuple(words[index : index + n]) for index in range(len(words) - n + 1))


class _InstructionIndex:
    """Instructions by their n-grams, for the most similar earlier instruction without comparing with each one."""

    def __init__(self, n: int) -> None:
        self.n = n
        self._grams: list[frozenset[tuple[str, ...]]] = []
        self._postings: dict[tuple[str, ...], list[int]] = {}

    def add(self, grams: frozenset[tuple[str, ...]]) -> None:
        for gram in grams:
            self._postings.setdefault(gram, []).append(len(self._grams))
        self._grams.append(grams)

    def most_similar(self, grams: frozenset[tuple[str, ...]]) -> tuple[int, float] | None:
        """The index and similarity of the indexed instruction closest to `grams` (the first of equals)."""
        shared = Counter(index for gram in grams for index in self._postings.get(gram, ()))
        best: tuple[int, float] | None = None
        for index, count in sorted(shared.items()):
            similarity = count / (len(grams) + len(self._grams[index]) - count)
            if best is None or similarity > best[1]:
                best = (index, similarity)
        return best


def _opening(text: str, words: int = 8) -> str:
    parts = text.split()
    return " ".join(parts[:words]) + (" ..." if len(parts) > words else "")


class Deduplicator:
    """Blueprints kept so far; `check` rejects a duplicate of one of them and keeps any other blueprint."""

    def __init__(self, writes: frozenset[str], *, threshold: float = DEDUP_THRESHOLD, n: int = NGRAM) -> None:
        self.writes = writes
        self.threshold = threshold
        self._keys: dict[str, str] = {}  # action key -> label of the blueprint that has it
        self._labels: list[str] = []
        self._instructions = _InstructionIndex(n)

    def check(self, blueprint: Blueprint) -> str | None:
        """Why `blueprint` duplicates a kept one (named by id, else by its number among the kept); None when it
        does not, in which case it is kept."""
        key = action_key(blueprint, self.writes)
        if key is not None and key in self._keys:
            return (
                f"duplicate of kept blueprint {self._keys[key]}: the same write actions for user {blueprint.user_id!r}"
            )
        grams = ngrams(blueprint.instruction, self._instructions.n)
        closest = self._instructions.most_similar(grams)
        if closest is not None and closest[1] >= self.threshold:
            index, similarity = closest
            return (
                f"near-duplicate of kept blueprint {self._labels[index]}: instruction similarity {similarity:.2f} "
                f">= {self.threshold:.2f}"
            )
        label = blueprint.id or f"#{len(self._labels)}"
        if key is not None:
            self._keys[key] = label
        self._labels.append(label)
        self._instructions.add(grams)
        return None


class Decontaminator:
    """Excluded tasks (a benchmark's test split, say); `check` rejects a blueprint that reproduces one of them.

    `tasks` are blueprint-like objects, such as tau-bench's `{user_id, instruction, actions: [{name, kwargs}],
    outputs}`; a task is named in reasons by its index in `tasks` and the opening words of its instruction.
    The write comparison ignores the user: the same writes (same order or reservation ids) are the same task.
    """

    def __init__(
        self,
        tasks: Sequence[Mapping[str, Any] | Blueprint],
        writes: frozenset[str],
        *,
        threshold: float = DECONTAMINATION_THRESHOLD,
        n: int = NGRAM,
    ) -> None:
        self.writes = writes
        self.threshold = threshold
        self._tasks: list[Blueprint] = []
        for index, task in enumerate(tasks):
            try:
                self._tasks.append(task if isinstance(task, Blueprint) else Blueprint.model_validate(task))
            except ValidationError as exc:
                first = exc.errors()[0]
                where = ".".join(str(part) for part in first["loc"]) or "task"
                raise ValueError(f"excluded task {index} is not a task: {where}: {first['msg']}") from None
        self._writes: dict[tuple[str, ...], int] = {}
        self._instructions = _InstructionIndex(n)
        for index, task in enumerate(self._tasks):
            calls = tuple(_writes(task, writes))
            if calls:  # a task without writes says nothing by its (empty) set of writes
                self._writes.setdefault(calls, index)
            self._instructions.add(ngrams(task.instruction, n))

    def __len__(self) -> int:
        return len(self._tasks)

    def check(self, blueprint: Blueprint) -> str | None:
        """Why `blueprint` reproduces an excluded task, naming it; None when it does not."""
        calls = tuple(_writes(blueprint, self.writes))
        if calls and calls in self._writes:
            return f"reproduces excluded task {self._name(self._writes[calls])}: the same write actions"
        closest = self._instructions.most_similar(ngrams(blueprint.instruction, self._instructions.n))
        if closest is not None and closest[1] >= self.threshold:
            index, similarity = closest
            return (
                f"too similar to excluded task {self._name(index)}: instruction similarity {similarity:.2f} "
                f">= {self.threshold:.2f}"
            )
        return None

    def _name(self, index: int) -> str:
        return f"{index} ({_opening(self._tasks[index].instruction)!r})"
