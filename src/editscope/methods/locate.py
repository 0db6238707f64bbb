"""Locate-then-edit core shared by ROME, MEMIT and AlphaEdit, and the three methods.

One implementation each of:

* :func:`context_templates`: short texts the model itself generates (seeded), prefixed to the prompt
  so that the edit generalises beyond one exact context (ROME's ``"{}"`` + generated prefixes);
* :func:`keys`: the input of a block's MLP output projection at the subject's last token (or the
  prompt's last token), averaged over the context templates, ``[n_requests, d_ff]``;
* :func:`target_residuals`: for each request, the vector ``delta`` (``[d]``) that, added to the
  residual stream at ``layer`` at the key position, makes the model produce ``target_new``: Adam on
  the target NLL over all contexts + ``kl_factor`` x KL on "{subject} is a" (keep what the model says
  about the subject otherwise) + weight decay, with ``||delta|| <= clamp_norm_factor * ||v||``;
* the closed-form updates (:func:`rome_update`, :func:`memit_update`, :func:`alphaedit_update`), and
  :func:`spread_over_layers`, MEMIT's distribution of the residual over a layer range.

Weights are ``[out, in]`` via ``ArchSpec.weight_out_in`` (GPT-2 Conv1D included).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import ExitStack
from typing import Any, Literal

import torch
from pydantic import Field, PositiveFloat, field_validator

from ..covariance import DEFAULT_CORPUS, DEFAULT_N_TOKENS, key_statistics_many, solve_psd
from ..hooks import add_to_output, capture_input, capture_output, replace_input, skip_modules
from ..models.arch import ArchSpec
from ..models.model import Model
from ..models.state import StateWatch
from ..requests import EditRequest
from ..scoring import (
    forward_until,
    pad_id,
    body_forward,
    kv_cache_of,
    encode_pairs,
    encode_prompts,
    logits_from_hidden,
    pad_batch,
    sample_continuations,
    token_index_at,
)
from .base import EditFailed, EditMethod, Hparams, HparamError, register_method
from .training import TrainingBatch, continuation_nll, trainable

CONTEXT_SEEDS = ("The", "Therefore", "Because", "I", "You")
KL_TEMPLATE = "{} is a"


class LocateHparams(Hparams):
    """Shared by ROME, MEMIT and AlphaEdit (names follow the official hyperparameter files)."""

    fact_token: Literal["subject_last", "last"] = "subject_last"
    n_contexts: int = Field(10, ge=0, le=100, description="generated context prefixes (plus the bare prompt)")
    context_len: int = Field(10, ge=1, le=64, description="new tokens of each generated prefix")
    contexts: list[tuple[int, int]] | None = Field(
        None, description="groups of generated prefixes as (new tokens, count) pairs, e.g. [[3, 10], [8, 10]] "
                          "(EasyEdit's two lengths); replaces n_contexts/context_len when given")

    @field_validator("contexts")
    @classmethod
    def _context_groups(cls, v: list[tuple[int, int]] | None) -> list[tuple[int, int]] | None:
        for i, (length, n) in enumerate(v or []):
            if length < 1 or n < 0:
                raise ValueError(f"contexts[{i}]=({length}, {n}): need (new tokens >= 1, count >= 0)")
        return v
    v_lr: PositiveFloat = 0.5
    v_steps: int = Field(25, ge=1, le=10_000)
    v_weight_decay: float = Field(1e-3, ge=0)
    kl_factor: float = Field(0.0625, ge=0)
    clamp_norm_factor: PositiveFloat = 4.0
    v_stop_loss: float = Field(0.05, ge=0)
    v_fail_loss: PositiveFloat = Field(3.0, description="EditFailed when the target NLL (nats/token) stays above this")
    stats_corpus: list[str] = Field(default_factory=lambda: list(DEFAULT_CORPUS))
    stats_tokens: int = Field(DEFAULT_N_TOKENS, ge=100)
    stats_dtype: Literal["float32", "float64"] = "float32"
    seed: int = 0


# --------------------------------------------------------------------------------------------
# shared core


def context_templates(model: Model, n: int, length: int, seed: int = 0) -> list[str]:
    """``["{}"]`` plus ``n`` model-generated prefixes ``"<text>. {}"`` (memoised on the model)."""
    key = ("context_templates", n, length, seed)
    memo = model.state.memo
    if key not in memo:
        per = -(-n // len(CONTEXT_SEEDS)) if n else 0
        texts = sample_continuations(model, list(CONTEXT_SEEDS), per, length, seed=seed) if n else []
        clean = [t.replace("{", " ").replace("}", " ").replace("\n", " ").strip() for t in texts[:n]]
        memo[key] = ["{}"] + [c + ". {}" for c in clean]
    return memo[key]


def templates_for(model: Model, hp: LocateHparams) -> list[str]:
    """The context templates ``hp`` asks for: ``["{}"]`` plus the generated prefixes of every
    :attr:`LocateHparams.contexts` group (or one group of ``n_contexts`` x ``context_len``)."""
    groups = hp.contexts if hp.contexts is not None else [(hp.context_len, hp.n_contexts)]
    out = ["{}"]
    for i, (length, n) in enumerate(groups):
        out += [t for t in context_templates(model, n, length, hp.seed + i)[1:] if t not in out]
    return out


def _fill(template: str, text: str) -> str:
    return template.replace("{}", text)


def key_positions(model: Model, texts: Sequence[str], request_prompts: Sequence[str],
                  requests: Sequence[EditRequest], fact_token: str) -> list[int]:
    """Token index of the key in each ``texts[i]`` (which ends with ``request_prompts[i]``)."""
    if fact_token == "last":
        return [len(ids) - 1 for ids in encode_prompts(model, texts)]
    chars = []
    for text, prompt, req in zip(texts, request_prompts, requests):
        start = len(text) - len(prompt) + prompt.index(req.subject)  # type: ignore[arg-type]
        chars.append(start + len(req.subject) - 1)  # type: ignore[arg-type]
    return token_index_at(model, texts, chars)


def _check_locatable(model: Model, requests: Sequence[EditRequest], fact_token: str) -> None:
    if fact_token != "subject_last":
        return
    for i, r in enumerate(requests):
        if r.subject is None:
            raise HparamError(f"requests[{i}] has no subject; fact_token='subject_last' needs "
                              "EditRequest(subject=...) (or use fact_token='last')")
        try:
            key_positions(model, [r.prompt], [r.prompt], [r], fact_token)
        except ValueError as e:
            raise HparamError(f"requests[{i}]: {e}") from None


def keys(model: Model, layer: int, requests: Sequence[EditRequest], templates: Sequence[str],
         fact_token: str) -> torch.Tensor:
    """Mean key (input of ``layer``'s MLP out-projection) at each request's key token over the
    context templates, ``[n_requests, d_ff]`` (float32)."""
    texts, prompts, reqs, owner = [], [], [], []
    for j, r in enumerate(requests):
        for t in templates:
            texts.append(_fill(t, r.prompt))
            prompts.append(r.prompt)
            reqs.append(r)
            owner.append(j)
    pos = key_positions(model, texts, prompts, reqs, fact_token)
    ids = encode_prompts(model, texts)
    x, _, p, starts = pad_batch(ids, 0, "right", model.device)
    proj = model.module("mlp_out", layer)
    with torch.inference_mode(), capture_input(proj) as seen:
        forward_until(model, proj, x, p)
    k = seen[0][torch.arange(len(ids)), torch.tensor(pos)].float()
    out = torch.zeros(len(requests), k.shape[-1], device=k.device)
    out.index_add_(0, torch.tensor(owner, device=k.device), k)
    return out / len(templates)


class ResidualProblem:
    """The residual optimisation's objective for one request, computed without redundant work.

    ``delta`` enters at ``layer`` at the key token, so in every row (contexts + the KL prompt):
    blocks below ``layer`` never change (their output is computed once) and neither do the tokens
    before the key in any block (causal attention). Rows are laid out as ``[prefix | suffix]``: the
    prefix (tokens before the key, left-padded to ``P``) is run once and kept as a key/value cache,
    and each optimisation step runs only the suffix (key token onward, so the key is column 0)
    through blocks ``layer..``. The objective equals a full forward of every row exactly in exact
    arithmetic (tests compare both). :class:`ResidualBatch` runs it (one problem or many).
    """

    def __init__(self, model: Model, layer: int, request: EditRequest, templates: Sequence[str], hp: LocateHparams):
        from transformers import DynamicCache

        self._cache_cls = DynamicCache
        self.model, self.layer = model, layer
        r = request
        texts = [_fill(t, r.prompt) for t in templates]
        pairs = encode_pairs(model, texts, [r.continuation] * len(texts))
        kps = key_positions(model, texts, [r.prompt] * len(texts), [r] * len(texts), hp.fact_token)
        for i, (pair, k) in enumerate(zip(pairs, kps)):
            if k >= len(pair.prompt_ids):
                raise EditFailed(f"the key token of {texts[i]!r} falls outside its prompt tokens")
        seqs = [list(p.prompt_ids + p.cont_ids) for p in pairs]
        self.has_kl = hp.kl_factor > 0 and r.subject is not None
        if self.has_kl:
            kl_text = KL_TEMPLATE.format(r.subject)
            seqs += encode_prompts(model, [kl_text])
            kps += token_index_at(model, [kl_text], [len(r.subject) - 1])
        dev = model.device
        P = max(kps)
        S = max(len(s) - k for s, k in zip(seqs, kps))
        ids = torch.full((len(seqs), P + S), pad_id(model), dtype=torch.long)
        mask = torch.zeros_like(ids)
        pos = torch.zeros_like(ids)
        # prefixes end at column P (left-padded), suffixes start there (right-padded): real tokens
        # keep their distances, which sliding-window attention (Gemma) measures in columns
        for b, (s, k) in enumerate(zip(seqs, kps)):
            ids[b, P - k:P], ids[b, P:P + len(s) - k] = torch.tensor(s[:k], dtype=torch.long), torch.tensor(s[k:])
            mask[b, P - k:P], mask[b, P:P + len(s) - k] = 1, 1
            pos[b, P - k:P], pos[b, P:P + len(s) - k] = torch.arange(k), torch.arange(k, len(s))
        ids, self.mask, pos = ids.to(dev), mask.to(dev), pos.to(dev)
        self.ids, self.pos, self.P = ids[:, P:], pos[:, P:], P
        n = len(pairs)
        rows, cols, targets, which = [], [], [], []
        for b, (pair, k) in enumerate(zip(pairs, kps)):
            n_p = len(pair.prompt_ids)
            rows += [b] * len(pair.cont_ids)
            cols += range(n_p - 1 - k, n_p - 1 - k + len(pair.cont_ids))
            targets += pair.cont_ids
            which += [b] * len(pair.cont_ids)
        self.batch = TrainingBatch(
            input_ids=self.ids[:n], position_ids=self.pos[:n], rows=torch.tensor(rows, device=dev),
            cols=torch.tensor(cols, device=dev), targets=torch.tensor(targets, device=dev),
            pair=torch.tensor(which, device=dev), last_prompt=torch.zeros(n, dtype=torch.long, device=dev),
            cont_ids=[p.cont_ids for p in pairs])
        self.kl_col = len(seqs[-1]) - 1 - kps[-1] if self.has_kl else None
        mlp_out = model.module("mlp_out", layer)
        with torch.no_grad(), capture_input(model.module("layer", layer)) as entering, \
                capture_input(mlp_out) as k_in, capture_output(mlp_out) as seen, \
                capture_output(model.module("attn_out", layer)) as attn_seen:
            # a full-length cache even on sliding-window layers: the prefix is reused whole
            out = body_forward(model, ids, self.mask, pos, kv_cache=DynamicCache(), use_cache=True)
            self.v0 = seen[0][0, P].float()  # the bare prompt's row
            self.a0 = attn_seen[0][0, P].float()  # the attention output there (PMET's second delta)
            self.key = k_in[0][:n, P].float().mean(0)  # == keys(model, layer, [request], templates)[0]
            self.prompt_key = k_in[0][0, P].float()  # the bare prompt's key (templates[0] is "{}")
            self.entering = entering[0][:, P:]
            keep = self.mask[:, None, :P, None].to(self.entering.dtype)  # pad columns: zeros, never NaN
            cache = kv_cache_of(out)
            self.prefix = [(lay.keys[:, :, :P] * keep, lay.values[:, :, :P] * keep) for lay in cache.layers]
            self.kl_base = None
            if self.has_kl:
                h = out.last_hidden_state[-1:, P + self.kl_col]
                self.kl_base = torch.log_softmax(logits_from_hidden(model, h), -1)
        self.below = [model.module("layer", i) for i in range(layer)]


class ResidualBatch:
    """Several :class:`ResidualProblem` s run as one batch: rows concatenated, prefixes left- and
    suffixes right-padded (masked) to the longest, each row adding its own request's ``delta``.

    Rows never attend to each other, so request ``k``'s objective depends on ``deltas[k]`` alone and
    equals its problem run by itself up to float rounding (tests compare them).
    """

    def __init__(self, problems: Sequence[ResidualProblem]):
        if not problems:
            raise ValueError("ResidualBatch needs at least one problem")
        first = problems[0]
        if any(p.model is not first.model or p.layer != first.layer for p in problems):
            raise ValueError("the problems of a ResidualBatch must share the model and the layer")
        self.model, self.layer, self.problems = first.model, first.layer, list(problems)
        self._cache_cls, self.below = first._cache_cls, first.below
        P, S = max(p.P for p in problems), max(p.ids.shape[1] for p in problems)
        pad = pad_id(first.model)

        def pad_to(t: torch.Tensor, width: int, dim: int, value: float = 0, left: bool = False) -> torch.Tensor:
            missing = width - t.shape[dim]
            if not missing:
                return t
            shape = list(t.shape)
            shape[dim] = missing
            fill = t.new_full(shape, value)
            return torch.cat([fill, t] if left else [t, fill], dim)

        self.ids = torch.cat([pad_to(p.ids, S, 1, pad) for p in problems])
        self.pos = torch.cat([pad_to(p.pos, S, 1) for p in problems])
        self.mask = torch.cat([torch.cat([pad_to(p.mask[:, :p.P], P, 1, left=True), pad_to(p.mask[:, p.P:], S, 1)], 1)
                               for p in problems])
        self.entering = torch.cat([pad_to(p.entering, S, 1) for p in problems])
        self.prefix = [(torch.cat([pad_to(p.prefix[i][0], P, 2, left=True) for p in problems]),
                        torch.cat([pad_to(p.prefix[i][1], P, 2, left=True) for p in problems]))
                       for i in range(len(first.prefix))]
        dev = first.model.device
        row0 = torch.tensor([0] + [p.ids.shape[0] for p in problems]).cumsum(0).tolist()
        pair0 = torch.tensor([0] + [p.batch.n_pairs for p in problems]).cumsum(0).tolist()
        self.owner = torch.cat([torch.full((p.ids.shape[0],), k, dtype=torch.long) for k, p in enumerate(problems)]).to(dev)
        self.rows = torch.arange(len(self.ids), device=dev)
        self.cols = torch.zeros(len(self.ids), dtype=torch.long, device=dev)
        self.batch = TrainingBatch(
            input_ids=self.ids, position_ids=self.pos,
            rows=torch.cat([p.batch.rows + row0[k] for k, p in enumerate(problems)]),
            cols=torch.cat([p.batch.cols for p in problems]),
            targets=torch.cat([p.batch.targets for p in problems]),
            pair=torch.cat([p.batch.pair + pair0[k] for k, p in enumerate(problems)]),
            last_prompt=torch.zeros(pair0[-1], dtype=torch.long, device=dev),
            cont_ids=[c for p in problems for c in p.batch.cont_ids])
        self.pair_owner = torch.cat([torch.full((p.batch.n_pairs,), k, dtype=torch.long)
                                     for k, p in enumerate(problems)]).to(dev)
        # the KL row is each problem's last row
        self.kl_at = [(k, row0[k + 1] - 1, p.kl_col) for k, p in enumerate(problems) if p.has_kl]

    def forward(self, deltas: torch.Tensor, attn_deltas: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, list[torch.Tensor | None]]:
        """``(target NLL per problem [K] in nats/token (mean over its contexts), KL prompt
        log-probs [1, V] per problem or None)`` with ``deltas[k]`` (``[K, d]``) added to ``layer``'s
        MLP output at the key token of problem ``k``'s rows (and ``attn_deltas[k]`` to its attention
        output there, when given: PMET)."""
        m = self.model
        cache = self._cache_cls(ddp_cache_data=self.prefix)
        with ExitStack() as stack:
            stack.enter_context(skip_modules(self.below, m.arch.block_returns_tuple))
            stack.enter_context(replace_input(m.module("layer", self.layer), self.entering))
            stack.enter_context(add_to_output(m.module("mlp_out", self.layer), self.rows, self.cols, deltas[self.owner]))
            if attn_deltas is not None:
                stack.enter_context(add_to_output(m.module("attn_out", self.layer), self.rows, self.cols,
                                                  attn_deltas[self.owner]))
            h = body_forward(m, self.ids, self.mask, self.pos, kv_cache=cache, use_cache=True).last_hidden_state
        per_pair = continuation_nll(m, self.batch, hidden=h)
        k_count = len(self.problems)
        total = torch.zeros(k_count, dtype=per_pair.dtype, device=per_pair.device).index_add(0, self.pair_owner, per_pair)
        counts = torch.bincount(self.pair_owner, minlength=k_count).to(per_pair.dtype)
        kl: list[torch.Tensor | None] = [None] * k_count
        if self.kl_at:
            rows = torch.tensor([r for _, r, _ in self.kl_at], device=h.device)
            cols = torch.tensor([c for _, _, c in self.kl_at], device=h.device)
            logp = torch.log_softmax(logits_from_hidden(m, h[rows, cols]), -1)
            for j, (k, _, _) in enumerate(self.kl_at):
                kl[k] = logp[j:j + 1]
        return total / counts, kl


def optimise_residuals(model: Model, problems: Sequence[ResidualProblem], requests: Sequence[EditRequest],
                       hp: LocateHparams, attn: bool = False) -> list[tuple[torch.Tensor, dict[str, Any]] | EditFailed]:
    """Adam on each problem's ``delta`` ``[d]``: target NLL + ``kl_factor`` x KL + weight decay,
    norm clamped to ``clamp_norm_factor * ||v||``, each stopping at ``v_stop_loss`` on its own.
    ``attn``: a second delta on the block's attention output is optimised jointly, decayed and
    clamped the same way relative to that output (PMET); only the MLP delta is returned.

    The problems run as one :class:`ResidualBatch` (rebuilt without the finished ones); each keeps
    its own Adam state, so every result is what that problem gets alone (up to float rounding).
    Returns per problem ``(delta, info)``, or the :class:`EditFailed` it raises alone (target NLL
    still above ``hp.v_fail_loss`` after ``hp.v_steps``).
    """
    zeros = lambda: torch.zeros(model.config.hidden_size, device=model.device, requires_grad=True)  # noqa: E731
    deltas = [zeros() for _ in problems]
    adeltas = [zeros() for _ in problems] if attn else []
    opt = torch.optim.Adam(deltas + adeltas, lr=hp.v_lr)
    v_norm = [p.v0.norm() for p in problems]
    a_norm = [p.a0.norm() for p in problems]
    max_norm = [hp.clamp_norm_factor * float(n) for n in v_norm]
    max_anorm = [hp.clamp_norm_factor * float(n) for n in a_norm]
    hist: list[list[float]] = [[] for _ in problems]
    live = list(range(len(problems)))
    batch = ResidualBatch(problems)
    with trainable(model):  # no parameter gradients: only the deltas are optimised
        for step in range(hp.v_steps + 1):
            opt.zero_grad(set_to_none=True)
            nll, kl_new = batch.forward(torch.stack([deltas[k] for k in live]),
                                        torch.stack([adeltas[k] for k in live]) if attn else None)
            loss, still = None, []
            for j, k in enumerate(live):
                hist[k].append(nll[j].item())
                if hist[k][-1] <= hp.v_stop_loss or step == hp.v_steps:
                    continue
                still.append(k)
                term = nll[j] + hp.v_weight_decay * deltas[k].norm() ** 2 / (v_norm[k] ** 2 + 1e-12)
                if attn:
                    term = term + hp.v_weight_decay * adeltas[k].norm() ** 2 / (a_norm[k] ** 2 + 1e-12)
                if kl_new[j] is not None:
                    term = term + hp.kl_factor * torch.nn.functional.kl_div(
                        kl_new[j], problems[k].kl_base, log_target=True, reduction="batchmean")
                loss = term if loss is None else loss + term
            if not still:
                break
            loss.backward()
            for k in live:
                if k not in still:
                    deltas[k].grad = None  # finished: Adam leaves it as it is
                    if attn:
                        adeltas[k].grad = None
            opt.step()
            with torch.no_grad():
                for k in still:
                    n = deltas[k].norm()
                    if n > max_norm[k]:
                        deltas[k].mul_(max_norm[k] / n)
                    if attn and (n := adeltas[k].norm()) > max_anorm[k]:
                        adeltas[k].mul_(max_anorm[k] / n)
            if len(still) < len(live):
                live = still
                batch = ResidualBatch([problems[k] for k in live])
    out: list[tuple[torch.Tensor, dict[str, Any]] | EditFailed] = []
    for k, (delta, r) in enumerate(zip(deltas, requests)):
        delta = delta.detach()
        if hist[k][-1] > hp.v_fail_loss:
            out.append(EditFailed(
                f"could not make the model produce {r.target_new!r} after {r.prompt!r} within "
                f"v_steps={hp.v_steps}: target NLL reached {hist[k][-1]:.3f} nats/token "
                f"(limit v_fail_loss={hp.v_fail_loss}); raise v_steps or v_lr"))
            continue
        info = {"v_steps": len(hist[k]) - 1, "v_loss_first": hist[k][0], "v_loss_last": hist[k][-1],
                "delta_norm": float(delta.norm()), "v_norm": float(v_norm[k])}
        if attn:
            info.update(attn_delta_norm=float(adeltas[k].detach().norm()), attn_norm=float(a_norm[k]))
        out.append((delta, info))
    return out


def optimise_residual(model: Model, prob: ResidualProblem, request: EditRequest, hp: LocateHparams
                      ) -> tuple[torch.Tensor, dict[str, Any]]:
    """:func:`optimise_residuals` for one problem; raises its EditFailed."""
    (got,) = optimise_residuals(model, [prob], [request], hp)
    if isinstance(got, EditFailed):
        raise got
    return got


def target_residuals(model: Model, layer: int, requests: Sequence[EditRequest], templates: Sequence[str],
                     hp: LocateHparams) -> tuple[torch.Tensor, list[dict[str, Any]]]:
    """``delta`` per request (``[n, d]``): what to add to the residual at ``layer`` (at the key
    token) so that the model produces the target; and per-request optimisation info. The requests
    are optimised as one batch; the first that cannot be reached raises EditFailed."""
    got: list[Any] = []
    for r in requests:
        sol = take_prepared(model, layer, r, hp)
        got.append(sol[0] if sol is not None else None)
    todo = [i for i, g in enumerate(got) if g is None]
    if todo:
        probs = [ResidualProblem(model, layer, requests[i], templates, hp) for i in todo]
        for i, res in zip(todo, optimise_residuals(model, probs, [requests[i] for i in todo], hp)):
            got[i] = res
    for g in got:
        if isinstance(g, EditFailed):
            raise g
    return torch.stack([d for d, _ in got]), [i for _, i in got]


# --------------------------------------------------------------------------------------------
# residuals prepared in one batch for edits applied one at a time later (single protocol, mining)


def _residual_key(layer: int, request: EditRequest, hp: LocateHparams) -> tuple:
    fields = {k: v for k, v in hp.model_dump().items() if k in LocateHparams.model_fields and not k.startswith("stats_")}
    return layer, request, tuple(sorted((k, str(v)) for k, v in fields.items()))


def prepare_residuals(model: Model, layer: int, requests: Sequence[EditRequest], hp: LocateHparams) -> None:
    """Optimise every request's target residual at ``layer`` as one batch on the current weights
    and keep them for the edits that follow: :func:`take_prepared` hands request ``r``'s result to
    the first edit of ``r`` with the same hyperparameters while the model is still bit-identical
    (checked by a :class:`StateWatch`), i.e. the single protocol's edit-evaluate-undo loop."""
    templates = templates_for(model, hp)
    todo = list(dict.fromkeys(requests))
    probs = [ResidualProblem(model, layer, r, templates, hp) for r in todo]
    watch = StateWatch.take(model)
    store = model.state.prepared_residuals
    for r, p, res in zip(todo, probs, optimise_residuals(model, probs, todo, hp)):
        store[_residual_key(layer, r, hp)] = (res, (p.key, p.prompt_key), watch)


def take_prepared(model: Model, layer: int, request: EditRequest, hp: LocateHparams
                  ) -> tuple[tuple[torch.Tensor, dict[str, Any]] | EditFailed, tuple[torch.Tensor, torch.Tensor]] | None:
    """The prepared ``((delta, info) or EditFailed, (mean key, prompt key))`` of ``request`` (removed from the store),
    or None when none was prepared or the weights changed since (stale entries are dropped)."""
    store = model.state.prepared_residuals
    if not store:
        return None
    entry = store.pop(_residual_key(layer, request, hp), None)
    if entry is None:
        return None
    res, key, watch = entry
    if not watch.holds(model):
        for k in [k for k, e in store.items() if e[2] is watch]:
            del store[k]
        return None
    return res, key


def rome_update(w: torch.Tensor, c: torch.Tensor | None, k: torch.Tensor, r: torch.Tensor,
                k_insert: torch.Tensor | None = None) -> tuple[torch.Tensor, float]:
    """ROME's rank-one ``dW = r u^T / (u . k_i)`` with ``u = C^{-1} k``: ``(W + dW) k_i = W k_i + r``
    at the insertion key ``k_i`` (default ``k``: the paper's equation; ROME's and EasyEdit's code
    insert at the bare prompt's key while ``u`` comes from the key averaged over contexts).

    ``w`` ``[out, in]``, ``c`` ``[in, in]`` (None: ``u = k``, EasyEdit's ``mom2_adjustment: false``),
    ``k`` and ``k_insert`` ``[in]``, ``r`` ``[out]``. Returns ``(dW, ridge)``.
    """
    if c is None:
        u, ridge = k.float(), 0.0
    else:
        u, ridge = solve_psd(c, k[:, None].to(c.dtype))
        u = u[:, 0].float()
    ki = k if k_insert is None else k_insert
    return torch.outer(r.float(), u) / torch.dot(u, ki.float()), ridge


def memit_update(c: torch.Tensor, k: torch.Tensor, r: torch.Tensor, mom2_weight: float) -> tuple[torch.Tensor, float]:
    """MEMIT's ``dW = R K^T (lambda C + K K^T)^{-1}`` for keys ``k`` ``[n, in]`` and residuals
    ``r`` ``[n, out]``; ``(dW [out, in], ridge)``."""
    kt = k.T.to(c.dtype)  # [in, n]
    x, ridge = solve_psd(mom2_weight * c + kt @ kt.T, kt)  # [in, n]
    return (r.float().T @ x.float().T), ridge


def emmet_update(c: torch.Tensor, k: torch.Tensor, r: torch.Tensor, emmet_lambda: float,
                 update_weight: float = 1.0, norm_lambda: float = 0.0) -> torch.Tensor:
    """EMMET's equality-constrained batch update (Gupta et al., 2024), as in its released code:
    ``dW = R (K^T C^-1 K + lambda_e I)^-1 K^T C^-1`` with ``C = update_weight * E[k k^T] +
    norm_lambda * I``, keys ``k`` ``[n, in]``, residuals ``r`` ``[n, out]``; ``dW`` ``[out, in]``.
    With ``lambda_e -> 0``, ``dW k_i = r_i`` exactly (ROME's constraint for every edit of a batch)."""
    cc = update_weight * c.double() + norm_lambda * torch.eye(c.shape[0], dtype=torch.float64)
    ci_k = torch.linalg.solve(cc, k.T.double())  # C^-1 K, [in, n]
    d = k.double() @ ci_k + emmet_lambda * torch.eye(k.shape[0], dtype=torch.float64)
    x = torch.linalg.solve(d, ci_k.T)  # D^-1 K^T C^-1 (C symmetric), [n, in]
    return (r.double().T @ x).float()


def nullspace_projector(c: torch.Tensor, rel_threshold: float) -> tuple[torch.Tensor, int]:
    """AlphaEdit's ``P = U0 U0^T`` over the eigenvectors of ``C`` whose eigenvalue is below
    ``rel_threshold`` x the largest one: updates through ``P`` leave the preserved keys' outputs
    (nearly) unchanged. Returns ``(P [in, in], null-space dimension)``."""
    evals, evecs = torch.linalg.eigh(c.double())
    small = evals < rel_threshold * evals.max()
    u0 = evecs[:, small]
    return (u0 @ u0.T).float(), int(small.sum())


def alphaedit_update(p: torch.Tensor, c_prev: torch.Tensor, k: torch.Tensor, r: torch.Tensor,
                     l2: float) -> torch.Tensor:
    """AlphaEdit's update, as in the official code: ``X = (P (K_p K_p^T + K K^T) + L2 I)^{-1} P K R^T``,
    ``dW = X^T`` (``[out, in]``). ``X`` lies in the range of ``P``, so ``dW k0 ~ 0`` for preserved keys."""
    kt = k.T.double()
    a = p.double() @ (c_prev.double() + kt @ kt.T) + l2 * torch.eye(p.shape[0], dtype=torch.float64)
    x = torch.linalg.solve(a, p.double() @ kt @ r.double())
    return x.T.float()


def add_to_mlp_out(model: Model, layer: int, dw: torch.Tensor) -> None:
    """Add ``dw`` (``[out, in]``) to block ``layer``'s MLP output projection weight, in place."""
    w = model.arch.weight_out_in(model.module("mlp_out", layer))
    with torch.no_grad():
        w.add_(dw.to(w.dtype).to(w.device))


def residual_at(model: Model, layer: int, requests: Sequence[EditRequest], fact_token: str,
                delta: torch.Tensor | None = None) -> torch.Tensor:
    """Residual stream after block ``layer`` at each request's key token, bare prompts, ``[n, d]``;
    ``delta`` (``[n, d]``): with it added to block ``layer``'s MLP output at that token."""
    return _at_key_token(model, model.module("layer", layer), requests, fact_token,
                         None if delta is None else (model.module("mlp_out", layer), delta))


def mlp_out_at(model: Model, layer: int, requests: Sequence[EditRequest], fact_token: str) -> torch.Tensor:
    """Output of block ``layer``'s MLP out-projection at each request's key token, ``[n, d]``."""
    return _at_key_token(model, model.module("mlp_out", layer), requests, fact_token)


def _at_key_token(model: Model, module: torch.nn.Module, requests: Sequence[EditRequest], fact_token: str,
                  add: tuple[torch.nn.Module, torch.Tensor] | None = None) -> torch.Tensor:
    prompts = [r.prompt for r in requests]
    pos = torch.tensor(key_positions(model, prompts, prompts, requests, fact_token))
    ids = encode_prompts(model, prompts)
    x, _, p, _ = pad_batch(ids, 0, "right", model.device)
    rows = torch.arange(len(ids))
    with ExitStack() as stack:
        stack.enter_context(torch.inference_mode())
        seen = stack.enter_context(capture_output(module))
        if add is not None:
            stack.enter_context(add_to_output(add[0], rows, pos, add[1]))
        forward_until(model, module, x, p)
    return seen[0][rows, pos].float()


def mlp_change_for(model: Model, layer: int, requests: Sequence[EditRequest], fact_token: str,
                   change: torch.Tensor) -> torch.Tensor:
    """The change of block ``layer``'s MLP out-projection output (``[n, d]``) that changes the
    block's contribution to the residual stream by ``change`` (``[n, d]``), to first order.

    Where the output is added as it is (Llama, GPT-2), that is ``change`` itself. Under a sandwich
    norm (Gemma 2/3: the residual gets ``norm(mlp_out(x))``) it is the least-squares solution of
    ``J u = change`` with ``J`` the norm's Jacobian at the current output: an RMS norm cannot move
    along its input's own direction, and dimensions with a near-zero gain are left alone
    (pseudo-inverse cut-off 1e-4 of the largest singular value) instead of blowing up.
    """
    if model.arch.mlp_post_norm is None:
        return change
    norm = model.module("mlp_post_norm", layer)
    m = mlp_out_at(model, layer, requests, fact_token).clone()  # out of inference mode
    dtype = next(norm.parameters()).dtype
    out = []
    for mi, ci in zip(m, change.float()):
        jac = torch.func.jacrev(lambda x: norm(x.to(dtype)[None])[0].float())(mi).detach()
        out.append(torch.linalg.pinv(jac, rtol=1e-4) @ ci)
    return torch.stack(out)


def key_second_moments(model: Model, layers: Sequence[int], hp: LocateHparams) -> dict[int, torch.Tensor]:
    """Key statistics of each layer (one corpus pass for all that are not cached yet)."""
    got = key_statistics_many(model, layers, corpus=hp.stats_corpus, n_tokens=hp.stats_tokens, dtype=hp.stats_dtype)
    return {layer: s.second_moment for layer, s in got.items()}


# --------------------------------------------------------------------------------------------
# methods


def _default_layer(arch: ArchSpec, n_layers: int) -> int:
    """ROME's block: ``arch.edit_depth`` of the depth; a sixth by default (5 of 30 on the default model).

    ROME's causal traces put factual recall in early-middle MLPs (EasyEdit's Llama-2-7B: 5 of 32;
    GPT-J: 5 of 28). On the default model, ``python benchmarks/bench_locate.py --n 6 --layer-sweep
    2 5 9 14`` (first 6 CounterFact records) gave ES 1.00 at every layer and paraphrase PS 1.00, 1.00,
    0.83, 0.67 at layers 2, 5, 9, 14 (NS 0.50, 0.33, 0.50, 0.33; n=6, so only the paraphrase drop
    with depth is a signal): generalisation fades above the early blocks, as in the traces.
    """
    return max(0, min(n_layers - 1, round(n_layers * arch.edit_depth)))


class ROMEHparams(LocateHparams):
    layer: int | None = Field(None, description="block whose MLP out-projection is edited; default per architecture")
    mom2_adjustment: bool = Field(True, description="u = C^-1 k (the ROME paper); False: u = k (EasyEdit's Llama "
                                  "hyperparameters), which needs no key covariance")
    insert_at: Literal["mean_key", "prompt_key"] = Field(
        "mean_key", description="the key at which the new value is inserted exactly: the key averaged over the "
                                "context prefixes (the paper's k*), or the bare prompt's (ROME's and EasyEdit's code)")


class _Locate(EditMethod):
    family = "locate-then-edit"

    def _layers(self, hp: Any) -> list[int]:
        return [hp.layer] if hasattr(hp, "layer") else list(hp.layers)

    def _needs_stats(self, hp: Any) -> bool:
        return getattr(hp, "mom2_adjustment", True)

    def statistics_request(self, model: Model, hp: Any) -> tuple[Any, list[int]] | None:
        if not self._needs_stats(hp):
            return None
        return (tuple(hp.stats_corpus), hp.stats_tokens, hp.stats_dtype), self._layers(hp)

    def check(self, model: Model, requests: Sequence[EditRequest], hp: Any) -> None:
        bad = [i for i in self._layers(hp) if not 0 <= i < model.n_layers]
        if bad:
            raise HparamError(f"layer(s) {bad} are outside the model; {model.name} has layers 0..{model.n_layers - 1}")
        _check_locatable(model, requests, hp.fact_token)
        if self._needs_stats(hp):
            key_second_moments(model, self._layers(hp), hp)  # computed (or read) now: bad statistics fail before any change

    def touched(self, model: Model, hp: Any) -> list[str]:
        return [model.arch.name("mlp_out", i) + ".weight" for i in self._layers(hp)]


@register_method
class ROME(_Locate):
    name = "rome"
    summary = ("rank-one update of one block's MLP out-projection (Meng et al., 2022), in the homogeneous r-ROME form "
               "(Gupta et al., 2024: the new value inserted at the averaged key); preset rome-paper is the released "
               "code's asymmetric form (inserted at the bare prompt's key)")
    Hparams = ROMEHparams
    one_at_a_time = True

    @classmethod
    def arch_defaults(cls, arch: ArchSpec, n_layers: int) -> dict[str, Any]:
        return {"layer": _default_layer(arch, n_layers)}

    def run(self, model: Model, requests: Sequence[EditRequest], hp: Any) -> dict[str, Any]:
        c = key_second_moments(model, [hp.layer], hp)[hp.layer] if hp.mom2_adjustment else None
        prepared = take_prepared(model, hp.layer, requests[0], hp)
        if prepared is None:
            templates = templates_for(model, hp)
            prob = ResidualProblem(model, hp.layer, requests[0], templates, hp)  # its pass also yields the key
            (delta, info), (key, prompt_key) = optimise_residual(model, prob, requests[0], hp), (prob.key, prob.prompt_key)
        else:
            res, (key, prompt_key) = prepared
            if isinstance(res, EditFailed):
                raise res
            delta, info = res
        dw, ridge = rome_update(model.arch.weight_out_in(model.module("mlp_out", hp.layer)), c, key, delta,
                                prompt_key if hp.insert_at == "prompt_key" else None)
        add_to_mlp_out(model, hp.layer, dw)
        return {**info, "ridge": ridge, "key_norm": float(key.norm()), "prepared": prepared is not None}

    def prepare(self, model: Model, requests: Sequence[EditRequest], hp: Any) -> None:
        prepare_residuals(model, hp.layer, requests, hp)


class SpreadHparams(LocateHparams):
    """Settings of the methods that spread the edit over a range of blocks (MEMIT, EMMET, AlphaEdit)."""

    layers: list[int] | None = Field(None, min_length=1, description="blocks to spread the edit over; default per architecture")

    @field_validator("layers")
    @classmethod
    def _sorted(cls, v):
        if v is not None and len(set(v)) != len(v):
            raise ValueError("layers must not repeat")
        return sorted(v) if v is not None else v


class MEMITHparams(SpreadHparams):
    mom2_weight: PositiveFloat | None = Field(None, description="lambda weighting the preserved-key covariance; "
                                              "default 15000 * d_ff / 16384 (MEMIT's GPT-J value scaled to the key width)")


def _default_layers(arch: ArchSpec, n_layers: int) -> list[int]:
    top = _default_layer(arch, n_layers)
    return list(range(max(0, top - 4), top + 1))  # five blocks ending at ROME's, as MEMIT's 3..8 on GPT-J


class _Spread(_Locate):
    """MEMIT-style: the residual at the last layer is spread over ``hp.layers`` bottom-up."""

    @classmethod
    def arch_defaults(cls, arch: ArchSpec, n_layers: int) -> dict[str, Any]:
        return {"layers": _default_layers(arch, n_layers)}

    def solve(self, model: Model, layer: int, c: torch.Tensor, k: torch.Tensor, r: torch.Tensor,
              hp: Any) -> tuple[torch.Tensor, dict[str, Any]]:
        raise NotImplementedError

    def prepare(self, model: Model, requests: Sequence[EditRequest], hp: Any) -> None:
        prepare_residuals(model, list(hp.layers)[-1], requests, hp)

    def run(self, model: Model, requests: Sequence[EditRequest], hp: Any) -> dict[str, Any]:
        layers = list(hp.layers)
        stats = key_second_moments(model, layers, hp)
        templates = templates_for(model, hp)
        top = layers[-1]
        delta, infos = target_residuals(model, top, requests, templates, hp)
        # the residual stream after the top block with delta added to its MLP output (with a
        # sandwich norm, delta reaches the stream through it: measured, not assumed)
        z_target = residual_at(model, top, requests, hp.fact_token, delta=delta)
        per_layer = {}
        for i, layer in enumerate(layers):
            k = keys(model, layer, requests, templates, hp.fact_token)
            # what the top layer still lacks, after the updates below it, shared among the rest
            resid = (z_target - residual_at(model, top, requests, hp.fact_token)) / (len(layers) - i)
            resid = mlp_change_for(model, layer, requests, hp.fact_token, resid)
            dw, info = self.solve(model, layer, stats[layer], k, resid, hp)
            add_to_mlp_out(model, layer, dw)
            per_layer[layer] = {**info, "update_norm": float(dw.norm())}
        return {"layers": per_layer, "requests": infos}


@register_method
class MEMIT(_Spread):
    name = "memit"
    summary = "mass edit spread over a range of MLP out-projections (Meng et al., 2023)"
    Hparams = MEMITHparams

    def solve(self, model, layer, c, k, r, hp):
        # k^T C^-1 k grows with the key width (its mean over the corpus is d_ff), so the weight that
        # balances one edit against the preserved keys scales with it: GPT-J (d_ff 16384) used 15000.
        lam = hp.mom2_weight if hp.mom2_weight is not None else 15000.0 * c.shape[0] / 16384
        dw, ridge = memit_update(c, k, r, lam)
        return dw, {"ridge": ridge, "mom2_weight": lam}


class EMMETHparams(SpreadHparams):
    """EMMET's settings in EasyEdit's configs (hparams/EMMET/*.yaml at 11e11e7): MEMIT's layer range,
    emmet_lambda 0.1, mom2_update_weight 1, update_norm_lambda 0."""

    emmet_lambda: PositiveFloat = Field(0.1, description="ridge on K^T C^-1 K (conditions the equality constraints)")
    mom2_update_weight: PositiveFloat = Field(1.0, description="scale of the key covariance C")
    update_norm_lambda: float = Field(0.0, ge=0, description="added to C's diagonal (an update-norm penalty)")


@register_method
class EMMET(_Spread):
    name = "emmet"
    summary = ("batched ROME: every edit of a batch written exactly (equality constraints), preserved keys by the "
               "covariance, spread like MEMIT (Gupta et al., 2024)")
    Hparams = EMMETHparams

    def solve(self, model, layer, c, k, r, hp):
        dw = emmet_update(c, k, r, hp.emmet_lambda, hp.mom2_update_weight, hp.update_norm_lambda)
        return dw, {"emmet_lambda": hp.emmet_lambda}


class AlphaEditHparams(MEMITHparams):
    nullspace_threshold: PositiveFloat = Field(1e-2, lt=1, description="eigenvalues of C below this fraction of "
                                               "the largest span the null space updates are confined to")
    l2: PositiveFloat = 10.0


@register_method
class AlphaEdit(_Spread):
    name = "alphaedit"
    summary = "MEMIT projected onto the null space of preserved keys; accumulates earlier edits' keys (Fang et al., 2025)"
    Hparams = AlphaEditHparams

    def solve(self, model, layer, c, k, r, hp):
        memo = model.state.memo
        pkey = ("alphaedit_projector", layer, hp.nullspace_threshold, id(c))
        if pkey not in memo:
            memo[pkey] = nullspace_projector(c, hp.nullspace_threshold)
        p, dim = memo[pkey]
        if dim == 0:  # the projected update would be exactly zero: say so instead of an edit that does nothing
            raise EditFailed(f"alphaedit: at layer {layer} every direction of the preserved keys carries more than "
                             f"nullspace_threshold={hp.nullspace_threshold} of the largest eigenvalue, so the null "
                             "space is empty and no update can leave them alone; raise nullspace_threshold (e.g. 0.1) "
                             "or leave this layer out of layers")
        prev = model.state.alphaedit_keys.get(layer)
        c_prev = sum((kk.T @ kk for _, kk in prev), torch.zeros_like(p)) if prev else torch.zeros_like(p)
        dw = alphaedit_update(p, c_prev, k, r, hp.l2)
        self._pending = getattr(self, "_pending", [])
        self._pending.append((layer, k.detach()))
        return dw, {"nullspace_dim": dim}

    def on_applied(self, model: Model, handle: Any) -> None:
        """Register the edit's keys (preserved by later edits); a loaded edit brings them in
        ``handle.extras`` (saved with it), so re-loading re-registers them."""
        pending = getattr(self, "_pending", [])
        if pending:
            handle.extras = {f"keys.{layer}.{i}": k for i, (layer, k) in enumerate(pending)}
        store = model.state.alphaedit_keys
        for name, k in handle.extras.items():
            if name.startswith("keys."):
                store.setdefault(int(name.split(".")[1]), []).append((id(handle), k))
        self._pending = []

    def on_undo(self, model: Model, handle: Any) -> None:
        store = model.state.alphaedit_keys
        for layer in list(store):
            store[layer] = [(h, k) for h, k in store[layer] if h != id(handle)]


__all__ = ["ROME", "MEMIT", "EMMET", "AlphaEdit", "emmet_update", "context_templates", "keys", "target_residuals", "ResidualProblem",
           "ResidualBatch", "optimise_residual", "optimise_residuals", "prepare_residuals", "take_prepared", "rome_update",
           "memit_update", "alphaedit_update", "nullspace_projector", "residual_at"]
