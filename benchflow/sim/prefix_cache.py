"""Automatic prefix caching (vLLM's ``--enable-prefix-caching``), block-granular, in the step model.

A prompt's full blocks of ``block_size`` tokens are hashed, each hash chained with its parent's
(:func:`block_hashes`), so equal hashes mean equal token prefixes, as in vLLM. A block whose
prompt tokens have been computed is registered under its hash and shared by every sequence that
starts with the same prefix (reference counted). When its last user finishes, the block stays
cached but free: it sits in an LRU that is evicted, oldest first, as free blocks are taken, so
the cache is bounded by the KV capacity. A new sequence starts with its cached leading blocks
already computed (they skip prefill); at least one prompt token is always computed.
Hits and queries are counted in tokens, like ``vllm:prefix_cache_hits``/``queries``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Sequence


def block_hashes(tokens: Sequence[Hashable], block_size: int) -> tuple[int, ...]:
    """Chained hashes of the full ``block_size``-token blocks of ``tokens`` (a partial tail: none)."""
    out: list[int] = []
    parent: int | None = None
    for i in range(len(tokens) // block_size):
        parent = hash((parent, tuple(tokens[i * block_size:(i + 1) * block_size])))
        out.append(parent)
    return tuple(out)


class PrefixCache:
    """Which block hashes are in the KV cache: in use (reference counted) or free but cached (LRU).

    The engine owns the free-block count; these methods say how many free blocks each operation
    takes (+) or gives back (-) so that the engine keeps one number.
    """

    def __init__(self) -> None:
        self._ref: dict[int, int] = {}
        self._lru: OrderedDict[int, None] = OrderedDict()
        self.queries = 0
        self.hits = 0

    @property
    def num_cached_free(self) -> int:
        return len(self._lru)

    def match(self, hashes: Sequence[int], max_blocks: int) -> tuple[list[int], int]:
        """The leading cached hashes (at most ``max_blocks``) and how many of them are free blocks."""
        hits: list[int] = []
        from_free = 0
        for h in hashes[:max(max_blocks, 0)]:
            if h in self._ref:
                hits.append(h)
            elif h in self._lru:
                hits.append(h)
                from_free += 1
            else:
                break
        return hits, from_free

    def acquire(self, hashes: Sequence[int]) -> int:
        """Takes a reference on each (matched) hash; returns the free blocks this takes."""
        taken = 0
        for h in hashes:
            if h in self._ref:
                self._ref[h] += 1
            else:
                del self._lru[h]
                self._ref[h] = 1
                taken += 1
        return taken

    def register(self, h: int) -> int:
        """A sequence's private block now holds the tokens of ``h``; returns the change in free
        blocks: +1 when an equal block already exists (the private copy is given back), else 0."""
        if h in self._ref:
            self._ref[h] += 1
            return 1
        if h in self._lru:  # the cached free copy is used instead, the private one is given back
            del self._lru[h]
        self._ref[h] = 1
        return 0

    def release(self, hashes: Sequence[int]) -> int:
        """Drops a reference on each hash; returns the blocks that became free (still cached)."""
        freed = 0
        for h in hashes:
            n = self._ref[h] - 1
            if n:
                self._ref[h] = n
            else:
                del self._ref[h]
                self._lru[h] = None
                freed += 1
        return freed

    def evict_to(self, free_blocks: int) -> None:
        """Forgets the least recently freed cached blocks until they fit in ``free_blocks``."""
        while len(self._lru) > free_blocks:
            self._lru.popitem(last=False)
