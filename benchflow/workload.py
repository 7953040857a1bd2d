"""Prompt generation: synthetic length distributions (genai-bench notation) and JSONL prompt files.

Notation (input lengths before the slash, output lengths after it):

* ``D(128,128)``: deterministic, 128 input and 128 output tokens;
* ``N(480,240)/(300,150)``: normal, mean 480 std 240 input, mean 300 std 150 output;
* ``U(50,150)/(20,80)``: uniform integers, 50..150 input and 20..80 output (both ends included);
* ``P(8,1024)/(128,256)``: shared prefixes: 8 groups, each with its own common prefix of 1024
  tokens; every prompt is its group's prefix plus a unique suffix of 128 tokens, and asks for 256
  output tokens (groups drawn uniformly per prompt). Exercises prefix caching.

Sampled lengths are rounded to integers and clipped to >= 1. Synthetic prompts are made without a
tokenizer: a prompt of N input tokens is N whitespace-separated common English words (each one token
in the usual BPE vocabularies; the simulator counts ``len(text.split())``). Everything is
deterministic given the seed.
"""

from __future__ import annotations

import json
import logging
import math
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from benchflow.errors import SpecError
from benchflow.records import Prompt, shuffled_cycles

if TYPE_CHECKING:
    from benchflow.spec import WorkloadSpec

__all__ = [
    "Dataset", "DeterministicLengths", "NormalLengths", "UniformLengths", "SharedPrefix", "JsonlDataset",
    "parse_dataset", "parse_notation", "make_prompts", "read_jsonl_prompts",
]

logger = logging.getLogger(__name__)

#: Common English words; each is a single token in the GPT/Llama/Qwen BPE vocabularies.
_WORDS = np.array(
    """the of and to in is was for on that with as by at from his it an were are which this be or
    has had not but first one their its new after who they have her she two been other when there
    all during into school time may years more most only over city some world would where later up
    such used many can state about national out known university united then made between part
    well also people water group house river back book game line long day place right team work
    year night small large music film light open close point order power story table north south
    east west field green black white blue red early great high low old young good home life""".split()
)

#: Largest token count (or mean, deviation, bound) a distribution may name: longer than any
#: model's context window, and each prompt is built in memory.
MAX_TOKENS_PER_REQUEST = 2**21

#: Most groups of a shared-prefix dataset (each prefix is built in memory).
MAX_PREFIX_GROUPS = 10_000
#: Most prefix tokens of all groups together.
MAX_PREFIX_TOKENS = 2**24

_NUM = r"\s*([+-]?\d+(?:\.\d*)?(?:[eE][+-]?\d+)?)\s*"
_PAIR = rf"\({_NUM},{_NUM}\)"
_NOTATION_RE = re.compile(rf"^\s*([A-Za-z])\s*{_PAIR}\s*(?:/\s*{_PAIR})?\s*$")
_FORMS = {
    "D": "D(input,output), e.g. D(128,128)",
    "N": "N(mean,std)/(mean,std) for input/output, e.g. N(480,240)/(300,150)",
    "U": "U(min,max)/(min,max) for input/output, e.g. U(50,150)/(20,80)",
    "P": "P(groups,prefix)/(suffix,output) for shared prefixes, e.g. P(8,1024)/(128,256)",
}


def _fmt(x: float) -> str:
    """Shortest text that reads back as exactly ``x``."""
    short = f"{x:g}"
    return short if float(short) == x else repr(float(x))


def _words(rng: np.random.Generator, n: int) -> str:
    return " ".join(_WORDS[rng.integers(0, len(_WORDS), size=n)])


class Dataset(ABC):
    """A source of prompts. ``generate(n, seed)`` is deterministic given ``seed``."""

    @abstractmethod
    def generate(self, n: int, seed: int) -> list[Prompt]:
        """Returns ``n`` prompts."""


@dataclass(frozen=True)
class _SyntheticLengths(Dataset):
    """Common part of the synthetic datasets: draw (input, output) lengths, then make word prompts."""

    @property
    @abstractmethod
    def notation(self) -> str:
        """The canonical genai-bench notation of this distribution."""

    @abstractmethod
    def _lengths(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Raw (unrounded) input and output lengths."""

    def generate(self, n: int, seed: int) -> list[Prompt]:
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        rng = np.random.default_rng(seed)
        ins, outs = self._lengths(rng, n)
        ins = np.maximum(np.rint(ins), 1).astype(np.int64)
        outs = np.maximum(np.rint(outs), 1).astype(np.int64)
        return [Prompt(text=_words(rng, int(i)), input_tokens=int(i), max_tokens=int(o)) for i, o in zip(ins, outs)]

    def __str__(self) -> str:
        return self.notation


@dataclass(frozen=True)
class DeterministicLengths(_SyntheticLengths):
    input_tokens: int
    output_tokens: int

    @property
    def notation(self) -> str:
        return f"D({self.input_tokens},{self.output_tokens})"

    def _lengths(self, rng, n):
        return np.full(n, self.input_tokens), np.full(n, self.output_tokens)


@dataclass(frozen=True)
class NormalLengths(_SyntheticLengths):
    input_mean: float
    input_std: float
    output_mean: float
    output_std: float

    @property
    def notation(self) -> str:
        nums = (self.input_mean, self.input_std, self.output_mean, self.output_std)
        return "N({},{})/({},{})".format(*map(_fmt, nums))

    def _lengths(self, rng, n):
        return rng.normal(self.input_mean, self.input_std, n), rng.normal(self.output_mean, self.output_std, n)


@dataclass(frozen=True)
class UniformLengths(_SyntheticLengths):
    input_min: int
    input_max: int
    output_min: int
    output_max: int

    @property
    def notation(self) -> str:
        return f"U({self.input_min},{self.input_max})/({self.output_min},{self.output_max})"

    def _lengths(self, rng, n):
        ins = rng.integers(self.input_min, self.input_max, size=n, endpoint=True)
        return ins, rng.integers(self.output_min, self.output_max, size=n, endpoint=True)


@dataclass(frozen=True)
class SharedPrefix(Dataset):
    """``groups`` common prefixes of ``prefix_tokens`` words; each prompt is one of them (drawn
    uniformly) plus a unique ``suffix_tokens``-word suffix, asking for ``output_tokens``."""

    groups: int
    prefix_tokens: int
    suffix_tokens: int
    output_tokens: int

    @property
    def notation(self) -> str:
        return f"P({self.groups},{self.prefix_tokens})/({self.suffix_tokens},{self.output_tokens})"

    def generate(self, n: int, seed: int) -> list[Prompt]:
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        rng = np.random.default_rng(seed)
        prefixes = [_words(rng, self.prefix_tokens) for _ in range(self.groups)]
        group = rng.integers(0, self.groups, size=n)
        size = self.prefix_tokens + self.suffix_tokens
        return [Prompt(text=f"{prefixes[int(g)]} {_words(rng, self.suffix_tokens)}", input_tokens=size,
                       max_tokens=self.output_tokens) for g in group]

    def __str__(self) -> str:
        return self.notation


def _as_int(x: float, what: str, text: str) -> int:
    if x != int(x):
        raise ValueError(f"{what} must be a whole number in {text!r}")
    return int(x)


def _build(letter: str, nums: list[float], text: str) -> _SyntheticLengths | SharedPrefix:
    if letter == "P":
        groups, prefix, suffix, out = (_as_int(x, "a count", text) for x in nums)
        if min(groups, prefix, suffix, out) < 1:
            raise ValueError(f"groups, prefix, suffix and output must be >= 1 in {text!r}")
        if groups > MAX_PREFIX_GROUPS:
            raise ValueError(f"at most {MAX_PREFIX_GROUPS:,} groups in {text!r}")
        if groups * prefix > MAX_PREFIX_TOKENS:
            raise ValueError(f"groups x prefix must be at most {MAX_PREFIX_TOKENS:,} tokens in {text!r} "
                             "(the prefixes are built in memory)")
        if prefix + suffix > MAX_TOKENS_PER_REQUEST:
            raise ValueError(f"prefix + suffix must be at most {MAX_TOKENS_PER_REQUEST:,} tokens in {text!r}")
        return SharedPrefix(groups, prefix, suffix, out)
    if letter == "D":
        i, o = (_as_int(x, "a token count", text) for x in nums)
        if i < 1 or o < 1:
            raise ValueError(f"token counts must be >= 1 in {text!r}")
        return DeterministicLengths(i, o)
    if letter == "N":
        if nums[0] <= 0 or nums[2] <= 0:
            raise ValueError(f"means must be > 0 in {text!r}")
        if nums[1] < 0 or nums[3] < 0:
            raise ValueError(f"standard deviations must be >= 0 in {text!r}")
        return NormalLengths(*nums)
    lo_i, hi_i, lo_o, hi_o = (_as_int(x, "a bound", text) for x in nums)
    if lo_i < 0 or lo_o < 0:
        raise ValueError(f"bounds must be >= 0 in {text!r}")
    if lo_i > hi_i or lo_o > hi_o:
        raise ValueError(f"min must be <= max in {text!r}")
    return UniformLengths(lo_i, hi_i, lo_o, hi_o)


def parse_notation(text: str) -> _SyntheticLengths | SharedPrefix:
    """Parses genai-bench notation; raises :class:`ValueError` with a one-line reason.

    (The spec's validators use this; :func:`parse_dataset` wraps it for CLI use.)
    """
    if not isinstance(text, str):
        raise ValueError(f"expected a distribution such as 'D(128,128)', got {text!r}")
    m = _NOTATION_RE.match(text)
    letter = m.group(1).upper() if m else text.strip()[:1].upper()
    if letter not in _FORMS:
        raise ValueError(f"unknown distribution {text!r}; use " + "; ".join(_FORMS.values()))
    if m is None:
        raise ValueError(f"malformed distribution {text!r}; expected {_FORMS[letter]}")
    nums = [float(g) for g in m.groups()[1:] if g is not None]
    expected = 2 if letter == "D" else 4
    if len(nums) != expected:
        raise ValueError(f"malformed distribution {text!r}; expected {_FORMS[letter]}")
    if not all(math.isfinite(x) for x in nums):
        raise ValueError(f"numbers must be finite in {text!r}")
    if any(abs(x) > MAX_TOKENS_PER_REQUEST for x in nums):
        raise ValueError(f"numbers must be at most {MAX_TOKENS_PER_REQUEST:,} in {text!r} "
                         "(tokens per request; longer than any context window)")
    return _build(letter, nums, text)


@dataclass(frozen=True)
class JsonlDataset(Dataset):
    """Prompts read from a JSONL file (see :func:`read_jsonl_prompts`), cycled as needed.

    ``generate(n, seed)`` takes the prompts in a seeded random order, reshuffling for each pass
    over the file when ``n`` is larger than the file.
    """

    path: Path
    default_max_tokens: int = 256

    def generate(self, n: int, seed: int) -> list[Prompt]:
        return shuffled_cycles(read_jsonl_prompts(self.path, self.default_max_tokens), n, seed)

    def __str__(self) -> str:
        return f"jsonl:{self.path}"


def _jsonl_prompt(obj: Any, default_max_tokens: int) -> Prompt:
    if not isinstance(obj, dict):
        raise ValueError("each line must be a JSON object")
    unknown = set(obj) - {"prompt", "messages", "max_tokens"}
    if unknown:
        raise ValueError(f"unknown key(s) {sorted(unknown)}; allowed: prompt, messages, max_tokens")
    max_tokens = obj.get("max_tokens", default_max_tokens)
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise ValueError(f"max_tokens must be an integer >= 1, got {max_tokens!r}")
    if ("prompt" in obj) == ("messages" in obj):
        raise ValueError("give exactly one of 'prompt' (a string) or 'messages' (a list)")
    if "prompt" in obj:
        if not isinstance(obj["prompt"], str) or not obj["prompt"]:
            raise ValueError("'prompt' must be a non-empty string")
        return Prompt(text=obj["prompt"], input_tokens=len(obj["prompt"].split()), max_tokens=max_tokens)
    messages = obj["messages"]
    if not isinstance(messages, list) or not messages or not all(
        isinstance(m, dict) and isinstance(m.get("role"), str) and "content" in m for m in messages
    ):
        raise ValueError("'messages' must be a non-empty list of {role, content} objects")
    text = "\n".join(c if isinstance(c := m["content"], str) else json.dumps(c) for m in messages)
    return Prompt(text=text, input_tokens=len(text.split()), max_tokens=max_tokens, messages=tuple(messages))


def jsonl_problems(path: Path, default_max_tokens: int = 256, limit: int = 10) -> tuple[list[Prompt], list[str]]:
    """Reads a JSONL prompt file; returns the prompts and one ``"line N: reason"`` per bad line
    (at most ``limit`` of them, then a count of the rest)."""
    prompts: list[Prompt] = []
    problems: list[str] = []
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        return [], [f"cannot read {path}: {getattr(e, 'strerror', None) or e}"]
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            prompts.append(_jsonl_prompt(json.loads(line), default_max_tokens))
        except (json.JSONDecodeError, ValueError) as e:
            problems.append(f"line {lineno}: {e}")
    if not prompts and not problems:
        problems.append(f"{path} holds no prompts")
    if len(problems) > limit:
        problems = problems[:limit] + [f"... and {len(problems) - limit} more bad lines"]
    return prompts, problems


def read_jsonl_prompts(path: str | Path, default_max_tokens: int = 256) -> list[Prompt]:
    """One prompt per non-blank line: ``{"prompt": str, "max_tokens"?: int}`` or
    ``{"messages": [{role, content}, ...], "max_tokens"?: int}``. Lines without ``max_tokens``
    ask for ``default_max_tokens``. Raises :class:`SpecError` listing every bad line."""
    prompts, problems = jsonl_problems(Path(path), default_max_tokens)
    if problems:
        raise SpecError(problems, source=str(path))
    return prompts


def parse_dataset(text: str) -> Dataset:
    """Parses genai-bench notation (``D(128,128)``, ``N(480,240)/(300,150)``, ``U(50,150)/(20,80)``)
    or ``jsonl:PATH``. Raises :class:`SpecError` (exit code 2 in the CLI) on malformed input."""
    from benchflow.traces import dataset_of  # mooncake:PATH, sharegpt:PATH

    if isinstance(text, str) and (file_source := dataset_of(text, _WORDS)) is not None:
        return file_source  # type: ignore[return-value]
    if isinstance(text, str) and text.strip().startswith("jsonl:"):
        path = Path(text.strip()[len("jsonl:"):]).expanduser()
        read_jsonl_prompts(path)  # fail early, with every bad line
        return JsonlDataset(path)
    try:
        return parse_notation(text)
    except ValueError as e:
        raise SpecError([f"dataset: {e}"]) from e


def make_prompts(workload: WorkloadSpec, n: int, seed: int) -> list[Prompt]:
    """The ``n`` prompts of one cell: from the workload's synthetic distribution or JSONL file."""
    dataset = workload.dataset
    if isinstance(dataset, str):
        source: Dataset = parse_notation(dataset)
    elif getattr(dataset, "format", "prompts") != "prompts":  # benchflow.traces: mooncake, sharegpt
        from benchflow.traces import FileDataset

        source = FileDataset(Path(dataset.jsonl), dataset.format, tuple(_WORDS), dataset.max_tokens,  # type: ignore[assignment]
                             dataset.block_size)
    else:
        source = JsonlDataset(Path(dataset.jsonl), dataset.max_tokens)
    prompts = source.generate(n, seed)
    logger.debug("made %s prompts from %s (seed %s)", len(prompts), source, seed)
    return prompts
