"""MEND's editor network (Mitchell et al., 2022, "Fast Model Editing at Scale", ICLR): the gradient of
a linear layer's weight on an edit is a sum of rank-one terms ``delta_t u_t^T`` (``u_t`` the layer's
input at token ``t``, ``delta_t`` the loss gradient at its output); a small network maps each pair
``(u_t, delta_t)`` to ``(u~_t, delta~_t)`` and the edit is ``W <- W - alpha * sum_t delta~_t u~_t^T``.

Read from EasyEdit's port (github.com/zjunlp/EasyEdit, ``easyeditor/trainer/algs/MEND.py`` at 0057deb,
``local_nn.py`` at a781d66; ``hparams/TRAINING/MEND/gpt2-xl.yaml``) of the authors' code. As there:

* one network per weight *shape* shared by the parameters of that shape, each parameter a "mode"
  with its own scale and shift (``shared: true``);
* the network reads ``[u; delta]`` concatenated (``combine: true``), normalised by the running mean
  and standard deviation of every row seen in training (frozen afterwards);
* ``n_hidden + 1`` low-rank residual layers ``x + relu(scale_m * (U V x + b) + shift_m)``, ``U``
  zero-initialised so the editor starts as the identity (``init: id``, ``mlp_class: IDMLP``), rank
  ``min(rank, width)`` (1920 in the reference). Every layer clamps, the last one included: the
  reference's ``IDMLP`` passes ``relu=idx < n_hidden`` to ``LRLinear``, whose forward ignores it and
  always applies ``clamp(min=0)``; editscope follows the code that produced the published numbers;
* a learned step size per parameter, ``alpha`` (``edit_lrs``, initialised to ``edit_lr``).

Differences, deliberate: the update is written as a descent step, ``W - alpha * G``, with ``alpha``
starting positive (the reference adds ``edit_lr * G`` and its learned ``edit_lrs`` turn negative
early in training); the running moments are exact pooled moments
(:class:`editscope.moments.RunningMoments`) rather than a per-row Welford loop (same values); rows
whose ``u`` or ``delta`` is zero are left out, as in the reference.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..moments import RunningMoments


class LowRankResidual(nn.Module):
    """``x + relu(scale[mode] * (x V^T U^T + b) + shift[mode])``; ``U`` ``[width, r]`` starts at zero."""

    def __init__(self, width: int, rank: int, n_modes: int):
        super().__init__()
        r = min(rank, width)
        self.u = nn.Parameter(torch.zeros(width, r))
        self.v = nn.Parameter(torch.randn(r, width))
        self.bias = nn.Parameter(torch.zeros(width))
        self.mode_scale = nn.Parameter(torch.ones(n_modes, width))
        self.mode_shift = nn.Parameter(torch.zeros(n_modes, width))

    def forward(self, x: torch.Tensor, mode: int) -> torch.Tensor:
        pre = (x @ self.v.T) @ self.u.T + self.bias
        pre = pre * self.mode_scale[mode] + self.mode_shift[mode]
        return x + pre.clamp(min=0)  # the reference's clamp: relu with a gradient path kept at 0


class GradientTransform(nn.Module):
    """The editor of one weight shape: ``(u [N, d_in], delta [N, d_out], mode) -> (u~, delta~)``."""

    def __init__(self, d_in: int, d_out: int, n_modes: int, rank: int = 1920, n_hidden: int = 1):
        super().__init__()
        self.d_in, self.d_out = d_in, d_out
        self.layers = nn.ModuleList(LowRankResidual(d_in + d_out, rank, n_modes) for _ in range(n_hidden + 1))
        self.moments = RunningMoments.empty(d_in + d_out)

    def observe(self, u: torch.Tensor, delta: torch.Tensor) -> None:
        """Add rows to the normalisation statistics (training only)."""
        self.moments.update(torch.cat((u, delta), -1).detach().float().cpu())

    def forward(self, u: torch.Tensor, delta: torch.Tensor, mode: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.moments.n < 2:
            raise RuntimeError("the editor has seen fewer than two gradient rows; it is not trained")
        x = torch.cat((u, delta), -1).float()
        mean, std = self.moments.mean.to(x.device), self.moments.std.to(x.device)
        x = (x - mean) / (std + 1e-7)
        for layer in self.layers:
            x = layer(x, mode)
        return x.split([self.d_in, self.d_out], -1)


class MendEditor(nn.Module):
    """The trained editor of a set of weights (names as in ``model.hf.named_parameters()``), each
    given as ``(d_in, d_out)``; weights of one shape share a :class:`GradientTransform`."""

    def __init__(self, shapes: dict[str, tuple[int, int]], rank: int = 1920, n_hidden: int = 1,
                 edit_lr: float = 1e-4):
        super().__init__()
        self.names = list(shapes)
        self.shapes = dict(shapes)
        groups: dict[tuple[int, int], list[str]] = {}
        for n, s in shapes.items():
            groups.setdefault(tuple(s), []).append(n)
        self.mode = {n: members.index(n) for members in groups.values() for n in members}
        self.key = {n: f"{s[0]}x{s[1]}" for n, s in shapes.items()}
        self.transforms = nn.ModuleDict({f"{s[0]}x{s[1]}": GradientTransform(s[0], s[1], len(members), rank, n_hidden)
                                         for s, members in groups.items()})
        self.edit_lrs = nn.Parameter(torch.full((len(self.names),), float(edit_lr)))

    def observe(self, factors: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> None:
        for n, (u, d) in factors.items():
            self.transforms[self.key[n]].observe(u, d)

    def updates(self, factors: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """``alpha_n * sum_t delta~_t u~_t^T`` per weight, ``[d_out, d_in]`` (to be subtracted)."""
        out = {}
        for i, n in enumerate(self.names):
            u, d = factors[n]
            u_t, d_t = self.transforms[self.key[n]](u, d, self.mode[n])
            out[n] = self.edit_lrs[i] * (d_t.T @ u_t)
        return out

    # ---- persistence: every tensor (network, step sizes and normalisation moments) by name
    def tensors(self) -> dict[str, torch.Tensor]:
        out = {k: v.detach() for k, v in self.state_dict().items()}
        for key, t in self.transforms.items():
            out[f"moments.{key}.n"] = torch.tensor([t.moments.n], dtype=torch.int64)
            out[f"moments.{key}.mean"] = t.moments.mean
            out[f"moments.{key}.m2"] = t.moments.m2
        return out

    def load_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        self.load_state_dict({k: v for k, v in tensors.items() if not k.startswith("moments.")})
        for key, t in self.transforms.items():
            t.moments = RunningMoments(int(tensors[f"moments.{key}.n"].item()), tensors[f"moments.{key}.mean"].clone(),
                                       tensors[f"moments.{key}.m2"].clone())


def nonzero_rows(u: torch.Tensor, delta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows (``[..., d]`` flattened) where neither ``u`` nor ``delta`` is all zero (the reference's mask:
    padding and positions the loss does not reach carry no gradient)."""
    u, delta = u.reshape(-1, u.shape[-1]), delta.reshape(-1, delta.shape[-1])
    keep = (u != 0).any(-1) & (delta != 0).any(-1)
    return u[keep].float(), delta[keep].float()


def shapes_of(weights: Sequence[tuple[str, torch.Tensor]]) -> dict[str, tuple[int, int]]:
    """``(d_in, d_out)`` of each ``(name, [out, in] weight view)``."""
    return {n: (w.shape[1], w.shape[0]) for n, w in weights}


__all__ = ["GradientTransform", "LowRankResidual", "MendEditor", "nonzero_rows", "shapes_of"]
