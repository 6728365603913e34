"""Several training sources as one deterministic stream (e.g. DIV2K + Flickr2K = DF2K), drawn by weight.

The stream is cut into rounds of ``round_length`` draws. In every round, source ``s`` gets exactly ``counts[s]``
draws (its weight's share, largest remainder; by image count when no weights are given, so that one round is one
epoch of every image), at positions shuffled by an RNG seeded with (seed, round) only. Global draw ``i`` is then
draw ``round * counts[s] + (how many of s's draws come earlier in the round)`` of source ``s``'s own stream. So
draw ``i`` still depends only on (seed, i): resume is exact, the mapping is one-to-one (DDP shards stay
disjoint), and each source walks through its images once per its own epoch, as a lone source would.
"""

from __future__ import annotations

import math

import numpy as np
from torch.utils.data import Dataset

from .dataset import PairedPatchDataset
from .errors import DataError

_ROUND_STREAM = 4  # distinct from the per-source streams (dataset.py) under the same seed


def apportion(shares: list[float], total: int) -> list[int]:
    """``total`` split in proportion to ``shares`` (largest remainder; ties go to the earlier source)."""
    whole = sum(shares)
    exact = [total * share / whole for share in shares]
    counts = [math.floor(x) for x in exact]
    by_remainder = sorted(range(len(shares)), key=lambda k: (-(exact[k] - counts[k]), k))
    for k in by_remainder[: total - sum(counts)]:
        counts[k] += 1
    return counts


class MixedPatchDataset(Dataset):
    """``dataset[i]`` is sample ``local(i)`` of one of ``parts`` (each a ``PairedPatchDataset``), see module doc."""

    def __init__(self, parts: list[PairedPatchDataset], weights: list[float] | None, seed: int) -> None:
        if len(parts) < 2:
            raise DataError("a mixed stream needs at least two sources")
        if weights is not None and (len(weights) != len(parts) or not all(w > 0 for w in weights)):
            raise DataError(f"need one positive weight per source, got {weights}")
        self.parts = parts
        self.seed = seed
        sizes = [len(part) for part in parts]
        shares = list(weights) if weights is not None else [float(n) for n in sizes]
        # Long enough that the smallest share still gets a draw in every round.
        self.round_length = max(sum(sizes), math.ceil(sum(shares) / min(shares)))
        self.counts = apportion(shares, self.round_length)
        self._round: tuple[int, np.ndarray, np.ndarray] | None = None  # (round, source per position, rank in it)

    def __len__(self) -> int:
        return self.round_length

    def _order(self, round_number: int) -> tuple[np.ndarray, np.ndarray]:
        if self._round is None or self._round[0] != round_number:
            rng = np.random.default_rng([self.seed, _ROUND_STREAM, round_number])
            sources = rng.permutation(np.repeat(np.arange(len(self.parts)), self.counts))
            ranks = np.empty(self.round_length, dtype=np.int64)
            for s in range(len(self.parts)):
                where = np.flatnonzero(sources == s)
                ranks[where] = np.arange(len(where))
            self._round = (round_number, sources, ranks)
        return self._round[1], self._round[2]

    def locate_source(self, index: int) -> tuple[int, int]:
        """``(source number, that source's draw index)`` of global draw ``index``."""
        if index < 0:
            raise IndexError(f"draw index must be non-negative, got {index}")
        round_number, offset = divmod(index, self.round_length)
        sources, ranks = self._order(round_number)
        s = int(sources[offset])
        return s, round_number * self.counts[s] + int(ranks[offset])

    def __getitem__(self, index: int) -> dict:
        s, local = self.locate_source(int(index))
        return self.parts[s][local]

    def hr_dtype(self, index: int) -> np.dtype:
        s, local = self.locate_source(int(index))
        return self.parts[s].hr_dtype(local)

    def describe(self) -> str:
        shares = "; ".join(
            f"[{k}] {100 * count / self.round_length:.1f}% of draws: {part.describe()}"
            for k, (part, count) in enumerate(zip(self.parts, self.counts))
        )
        return f"{len(self.parts)} sources ({shares})"
