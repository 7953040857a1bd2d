"""The step model of a continuous-batching engine (vLLM V1-like scheduler), in virtual time.

The engine knows no clock: :meth:`Engine.step` schedules one step, advances every sequence
and returns how long the step took and which tokens it produced. The real-time server sleeps
for that duration before releasing the tokens; :mod:`benchflow.sim.virtual` just adds it up.

One step:
1. Running sequences, in order, get their next tokens (1 when decoding; a prefill chunk of at
   most the remaining token budget otherwise). When their new KV blocks do not fit, the
   lowest-ranked running sequence not yet scheduled in this step is preempted (recompute: its
   KV is freed and it goes back to waiting), possibly the sequence itself.
2. If nothing was preempted, waiting sequences are admitted in policy order (FCFS, or
   ``priority`` then arrival) while ``max_num_seqs``, the token budget and the free blocks
   (minus a small watermark) allow. Without chunked prefill a prompt is admitted whole.
   With prefix caching on, a new sequence's cached leading blocks count as computed
   (:mod:`benchflow.sim.prefix_cache`): they skip prefill and take no new blocks.
3. Duration = time_scale x (overhead + prefill tokens x cost + sequences x cost + KV tokens
   read x cost). A sequence whose KV then holds all its tokens emits one token.
"""

from __future__ import annotations

import bisect
import logging
from dataclasses import dataclass, field

from benchflow.sim.config import EngineConfig
from benchflow.sim.prefix_cache import PrefixCache

logger = logging.getLogger(__name__)


@dataclass(slots=True, eq=False)
class Sequence:
    """One request inside the engine. Token counts only; the text is made by the server."""

    request_id: str
    prompt_tokens: int
    max_tokens: int
    priority: int = 0
    #: Arrival order, set by the engine (FCFS key).
    arrival: int = 0
    generated: int = 0
    #: Tokens whose KV is in the cache.
    computed: int = 0
    #: Private KV blocks (not shared through the prefix cache).
    blocks: int = 0
    num_preemptions: int = 0
    #: Chained hashes of the prompt's full blocks (prefix caching; empty: never cached).
    block_hashes: tuple[int, ...] = ()
    #: Leading blocks held through the prefix cache (their hashes).
    shared: list[int] = field(default_factory=list)

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.generated

    @property
    def is_decoding(self) -> bool:
        return self.generated > 0 and self.total_tokens - self.computed == 1


@dataclass(slots=True, frozen=True)
class TokenOutput:
    """One token produced by a step for ``request_id``; ``index`` is 0-based."""

    request_id: str
    index: int
    finished: bool


@dataclass(slots=True)
class StepResult:
    """What one step did and how long it took (seconds, time_scale applied)."""

    duration_s: float
    outputs: list[TokenOutput] = field(default_factory=list)
    num_seqs: int = 0
    prefill_tokens: int = 0
    kv_tokens: int = 0
    num_preemptions: int = 0
    #: Prompt tokens looked up in / found in the prefix cache by the sequences admitted in this step.
    prefix_cache_queries: int = 0
    prefix_cache_hits: int = 0


class Engine:
    """Scheduler + KV-cache block accounting + cost model. Not thread-safe; one owner drives it."""

    def __init__(self, config: EngineConfig):
        self.config = config
        self._running: list[Sequence] = []
        self._waiting: list[Sequence] = []
        self._by_id: dict[str, Sequence] = {}
        self._free_blocks = config.num_gpu_blocks
        self._arrivals = 0
        self.num_preemptions_total = 0
        self.num_steps = 0
        self.prefix_cache = PrefixCache() if config.enable_prefix_caching else None
        self._step_queries = 0
        self._step_hits = 0

    # --- state -------------------------------------------------------------------------
    @property
    def num_running(self) -> int:
        return len(self._running)

    @property
    def num_waiting(self) -> int:
        return len(self._waiting)

    @property
    def has_work(self) -> bool:
        return bool(self._running or self._waiting)

    @property
    def used_blocks(self) -> int:
        return self.config.num_gpu_blocks - self._free_blocks

    @property
    def kv_cache_usage(self) -> float:
        """Share of KV-cache blocks in use, 0..1 (``vllm:kv_cache_usage_perc``)."""
        return self.used_blocks / self.config.num_gpu_blocks

    # --- requests ------------------------------------------------------------------------
    def add(self, seq: Sequence) -> None:
        """Queues a new sequence. Its prompt + max_tokens must fit ``max_model_len``."""
        if seq.request_id in self._by_id:
            raise ValueError(f"duplicate request id {seq.request_id!r}")
        if seq.prompt_tokens + seq.max_tokens > self.config.max_model_len or seq.max_tokens < 1:
            raise ValueError(f"request {seq.request_id!r} does not fit max_model_len {self.config.max_model_len}")
        seq.arrival = self._arrivals
        self._arrivals += 1
        self._by_id[seq.request_id] = seq
        self._push_waiting(seq)

    def abort(self, request_id: str) -> bool:
        """Drops a sequence (client went away) and frees its KV. False if unknown/finished."""
        seq = self._by_id.pop(request_id, None)
        if seq is None:
            return False
        if seq in self._running:
            self._running.remove(seq)
        else:
            self._waiting.remove(seq)
        self._free(seq)
        return True

    # --- the step ------------------------------------------------------------------------
    def step(self) -> StepResult | None:
        """Schedules and runs one step; None when there is nothing to do."""
        if not self.has_work:
            return None
        budget = self.config.max_num_batched_tokens
        self._step_queries = self._step_hits = 0
        scheduled: list[tuple[Sequence, int]] = []
        budget, preempted = self._schedule_running(budget, scheduled)
        if preempted == 0:
            self._admit_waiting(budget, scheduled)
        self.num_steps += 1
        return self._execute(scheduled, preempted)

    def _schedule_running(self, budget: int, scheduled: list[tuple[Sequence, int]]) -> tuple[int, int]:
        pending = list(self._running)
        kept: list[Sequence] = []
        preempted = 0
        while pending:
            seq = pending.pop(0)
            n = min(seq.total_tokens - seq.computed, budget)
            if n <= 0:
                kept.append(seq)
                continue
            need = self._blocks_needed(seq, n)
            while need > self._free_blocks:
                victim = self._pick_victim(seq, pending)
                self._preempt(victim)
                preempted += 1
                if victim is seq:
                    break
                pending.remove(victim)
            else:
                self._allocate(seq, need)
                scheduled.append((seq, n))
                budget -= n
                kept.append(seq)
        self._running = kept
        return budget, preempted

    def _pick_victim(self, seq: Sequence, pending: list[Sequence]) -> Sequence:
        if self.config.scheduling_policy == "priority":
            return max([seq, *pending], key=lambda s: (s.priority, s.arrival))
        return pending[-1] if pending else seq

    def _admit_waiting(self, budget: int, scheduled: list[tuple[Sequence, int]]) -> None:
        chunked = self.config.enable_chunked_prefill
        watermark = int(self.config.watermark * self.config.num_gpu_blocks)
        while self._waiting and len(self._running) < self.config.max_num_seqs and budget > 0:
            seq = self._waiting[0]
            hits, from_free = self._cache_match(seq)
            cached = len(hits) * self.config.block_size
            n = seq.total_tokens - seq.computed - cached
            if chunked:
                n = min(n, budget)
            elif n > budget and scheduled:
                break  # admitted whole, only into a step that has nothing else (recompute > budget)
            need = -(-(seq.computed + cached + n) // self.config.block_size) - seq.blocks - len(hits)
            reserve = watermark if self._running else 0
            if need + from_free + reserve > self._free_blocks:
                break
            self._waiting.pop(0)
            if self.prefix_cache is not None and seq.computed == 0:
                self._take_cached(seq, hits)
            self._allocate(seq, need)
            self._running.append(seq)
            scheduled.append((seq, n))
            budget -= n

    def _execute(self, scheduled: list[tuple[Sequence, int]], preempted: int) -> StepResult:
        prefill = sum(n for seq, n in scheduled if not seq.is_decoding)
        kv = sum(seq.computed + n for seq, n in scheduled)
        cfg = self.config
        duration = cfg.time_scale * cfg.costs.duration_s(prefill, len(scheduled), kv)
        result = StepResult(duration, num_seqs=len(scheduled), prefill_tokens=prefill, kv_tokens=kv,
                            num_preemptions=preempted)
        finished: list[Sequence] = []
        result.prefix_cache_queries, result.prefix_cache_hits = self._step_queries, self._step_hits
        for seq, n in scheduled:
            seq.computed += n
            if self.prefix_cache is not None:
                self._register_blocks(seq)
            if seq.computed < seq.total_tokens:
                continue  # partial prefill
            seq.generated += 1
            done = seq.generated >= seq.max_tokens
            result.outputs.append(TokenOutput(seq.request_id, seq.generated - 1, done))
            if done:
                finished.append(seq)
        for seq in finished:
            self._running.remove(seq)
            self._by_id.pop(seq.request_id, None)
            self._free(seq)
        if not scheduled:
            logger.warning("engine step scheduled nothing (running=%d waiting=%d free blocks=%d)",
                           len(self._running), len(self._waiting), self._free_blocks)
        return result

    # --- prefix cache --------------------------------------------------------------------
    def _cache_match(self, seq: Sequence) -> tuple[list[int], int]:
        if self.prefix_cache is None or seq.computed != 0:
            return [], 0
        max_blocks = (seq.total_tokens - 1) // self.config.block_size  # compute at least one token
        return self.prefix_cache.match(seq.block_hashes, max_blocks)

    def _take_cached(self, seq: Sequence, hits: list[int]) -> None:
        cache = self.prefix_cache
        assert cache is not None
        self._free_blocks -= cache.acquire(hits)
        cache.evict_to(self._free_blocks)
        seq.shared = list(hits)
        seq.computed = len(hits) * self.config.block_size
        cache.queries += seq.prompt_tokens
        cache.hits += seq.computed
        self._step_queries += seq.prompt_tokens
        self._step_hits += seq.computed

    def _register_blocks(self, seq: Sequence) -> None:
        """Moves the sequence's newly full prompt blocks into the prefix cache."""
        cache = self.prefix_cache
        assert cache is not None
        full = min(seq.computed // self.config.block_size, len(seq.block_hashes))
        for i in range(len(seq.shared), full):
            self._free_blocks += cache.register(seq.block_hashes[i])
            seq.shared.append(seq.block_hashes[i])
            seq.blocks -= 1

    # --- blocks --------------------------------------------------------------------------
    def _blocks_needed(self, seq: Sequence, n_new: int) -> int:
        bs = self.config.block_size
        return -(-(seq.computed + n_new) // bs) - seq.blocks - len(seq.shared)

    def _allocate(self, seq: Sequence, n_blocks: int) -> None:
        self._free_blocks -= n_blocks
        seq.blocks += n_blocks
        if self.prefix_cache is not None:
            self.prefix_cache.evict_to(self._free_blocks)

    def _free(self, seq: Sequence) -> None:
        self._free_blocks += seq.blocks
        seq.blocks = 0
        if self.prefix_cache is not None:
            self._free_blocks += self.prefix_cache.release(seq.shared)
        seq.shared = []

    def _preempt(self, seq: Sequence) -> None:
        logger.debug("preempting %s (computed=%d, blocks=%d)", seq.request_id, seq.computed, seq.blocks)
        self._free(seq)
        seq.computed = 0
        seq.num_preemptions += 1
        self.num_preemptions_total += 1
        self._push_waiting(seq)

    def _push_waiting(self, seq: Sequence) -> None:
        if self.config.scheduling_policy == "priority":
            bisect.insort(self._waiting, seq, key=lambda s: (s.priority, s.arrival))
        else:
            bisect.insort(self._waiting, seq, key=lambda s: s.arrival)
