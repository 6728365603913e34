"""The generator's objective: a weighted sum of named terms, returning the total and each weighted part."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class LossOutput:
    total: torch.Tensor
    parts: dict[str, torch.Tensor]  # name -> weight * term; they add up to total


class LossSet:
    """``[(name, weight, loss_fn), ...]`` -> ``sum(weight * loss_fn(sr, hr))``.

    One term of weight 1 (the plain L1 default) returns that term itself: no extra op, the same number.
    """

    def __init__(self, terms: list[tuple[str, float, LossFn]]) -> None:
        if not terms:
            raise ValueError("a LossSet needs at least one term")
        self.terms = terms

    @classmethod
    def of(cls, loss_fn: LossFn, name: str = "loss") -> LossSet:
        """A single callable ``(sr, hr) -> scalar`` (``train(loss_fn=...)``, custom objectives)."""
        return loss_fn if isinstance(loss_fn, LossSet) else cls([(name, 1.0, loss_fn)])

    @property
    def names(self) -> list[str]:
        return [name for name, _, _ in self.terms]

    @property
    def discriminator(self) -> nn.Module | None:
        """The network a term scores SR with (the gan term's), or None: what the adversarial update trains."""
        for _, _, fn in self.terms:
            if isinstance(getattr(fn, "discriminator", None), nn.Module):
                return fn.discriminator
        return None

    def __call__(self, sr: torch.Tensor, hr: torch.Tensor) -> LossOutput:
        parts = {}
        for name, weight, fn in self.terms:
            value = fn(sr, hr)
            parts[name] = value if weight == 1.0 else weight * value
        values = iter(parts.values())
        total = next(values)
        for value in values:
            total = total + value
        return LossOutput(total, parts)
