"""Running moments of a stream of rows: exact pooled mean and sum of squared deviations (Chan et
al.'s pairwise merge), for the methods that normalise by everything seen so far (UltraEdit's lifelong
statistics, MEND's input normalisation)."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class RunningMoments:
    """Pooled mean and sum of squared deviations of the rows seen so far (``[size]`` each)."""

    n: int
    mean: torch.Tensor
    m2: torch.Tensor

    @classmethod
    def empty(cls, size: int) -> RunningMoments:
        return cls(0, torch.zeros(size), torch.zeros(size))

    def update(self, x: torch.Tensor) -> None:
        """Add the rows ``x`` ``[m, size]`` (Chan et al.'s pairwise merge)."""
        m = x.shape[0]
        if m == 0:
            return
        mx = x.mean(0)
        ss = ((x - mx) ** 2).sum(0)
        n = self.n + m
        delta = mx - self.mean
        self.mean = self.mean + delta * (m / n)
        self.m2 = self.m2 + ss + delta.pow(2) * (self.n * m / n)
        self.n = n

    @property
    def std(self) -> torch.Tensor:
        return (self.m2 / max(self.n - 1, 1)).sqrt()

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / (self.std + torch.finfo(x.dtype).eps)

    def copy(self) -> RunningMoments:
        return RunningMoments(self.n, self.mean.clone(), self.m2.clone())


__all__ = ["RunningMoments"]
