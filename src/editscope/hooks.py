"""One way to read and patch activations: capture a module's input or output, replace a module's
input, skip modules, stop a forward early. Used by incremental evaluation, edit methods (keys and
values at a layer), covariance statistics and tracing. Every context manager removes its hooks on
exit, also on error.

The "input" of a transformer block is its residual-stream hidden states ``[B, T, d]``: the first
positional argument or the ``hidden_states`` keyword, whichever the architecture uses.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn


class StopForward(Exception):
    """Raised by :func:`stop_after` to end a forward pass once the watched module has run."""


def hidden_from(args: tuple, kwargs: dict) -> torch.Tensor:
    """A block's hidden-state input from its call arguments (first positional or ``hidden_states``)."""
    if args:
        return args[0]
    if "hidden_states" in kwargs:
        return kwargs["hidden_states"]
    raise RuntimeError("cannot find the hidden states among the module's inputs")


def _with_hidden(args: tuple, kwargs: dict, value: torch.Tensor) -> tuple[tuple, dict]:
    if args:
        return (value, *args[1:]), kwargs
    return args, {**kwargs, "hidden_states": value}


@contextmanager
def _hooked(module: nn.Module, hook: Callable, pre: bool = False) -> Iterator[None]:
    """``hook`` registered on ``module`` for the block's duration: a forward pre-hook (called with
    ``(module, args, kwargs)``) when ``pre``, else a forward hook (``(module, args, output)``)."""
    handle = module.register_forward_pre_hook(hook, with_kwargs=True) if pre else module.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


@contextmanager
def capture_input(module: nn.Module) -> Iterator[list[torch.Tensor]]:
    """Collect the hidden-state input of every call of ``module`` (detached) into a list."""
    seen: list[torch.Tensor] = []

    def hook(mod, args, kwargs):
        seen.append(hidden_from(args, kwargs).detach())

    with _hooked(module, hook, pre=True):
        yield seen


@contextmanager
def capture_output(module: nn.Module) -> Iterator[list[Any]]:
    """Collect the output of every call of ``module`` (first element when it returns a tuple)."""
    seen: list[Any] = []

    def hook(mod, args, output):
        out = output[0] if isinstance(output, tuple) else output
        seen.append(out.detach() if isinstance(out, torch.Tensor) else out)

    with _hooked(module, hook):
        yield seen


@contextmanager
def capture_input_and_output_grad(module: nn.Module) -> Iterator[list[list[torch.Tensor]]]:
    """Collect, per call of ``module``, ``[input, output gradient]`` (both detached): the input at
    the forward pass, the gradient of the loss with respect to the output once ``backward`` runs
    (a call whose output gets no gradient keeps only its input)."""
    seen: list[list[torch.Tensor]] = []

    def hook(mod, args, output):
        entry = [args[0].detach()]
        seen.append(entry)
        out = output[0] if isinstance(output, tuple) else output
        if out.requires_grad:
            out.register_hook(lambda g: entry.append(g.detach()))

    with _hooked(module, hook):
        yield seen


@contextmanager
def replace_input(module: nn.Module, value: torch.Tensor) -> Iterator[None]:
    """Feed ``value`` to ``module`` in place of the hidden states it would receive."""

    def hook(mod, args, kwargs):
        return _with_hidden(args, kwargs, value)

    with _hooked(module, hook, pre=True):
        yield


@contextmanager
def skip_modules(modules: Sequence[nn.Module], returns_tuple: bool = False) -> Iterator[None]:
    """Make ``modules`` return their hidden-state input unchanged (no computation).

    ``returns_tuple``: the block returns ``(hidden_states, ...)`` rather than a tensor (GPT-J);
    see ``ArchSpec.block_returns_tuple``.
    """

    def passthrough(*args, **kwargs):
        h = hidden_from(args, kwargs)
        return (h,) if returns_tuple else h

    saved = [m.__dict__.get("forward") for m in modules]
    try:
        for m in modules:
            m.forward = passthrough  # instance attribute shadows the class method
        yield
    finally:
        for m, f in zip(modules, saved):
            if f is None:
                del m.forward
            else:
                m.forward = f


@contextmanager
def stop_after(module: nn.Module) -> Iterator[list[Any]]:
    """Capture ``module``'s output and abort the forward right after it (catch :class:`StopForward`)."""
    seen: list[Any] = []

    def hook(mod, args, output):
        seen.append(output)
        raise StopForward

    with _hooked(module, hook):
        yield seen


@contextmanager
def add_to_output(module: nn.Module, rows: torch.Tensor, cols: torch.Tensor, delta: torch.Tensor) -> Iterator[None]:
    """Add ``delta`` (``[d]`` or ``[len(rows), d]``) to ``module``'s output at positions ``(rows, cols)``.

    Differentiable in ``delta`` (edit methods optimise it); the output is not modified in place.
    """

    def hook(mod, args, output):
        out = output[0] if isinstance(output, tuple) else output
        patched = out.index_put((rows, cols), out[rows, cols] + delta.to(out.dtype))
        return (patched, *output[1:]) if isinstance(output, tuple) else patched

    with _hooked(module, hook):
        yield
