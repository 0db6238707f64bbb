"""Perplexity of a model on a text corpus (ME-PPL, WikiText-2, or your own), and the collapse test.

Method (Hugging Face "Perplexity of fixed-length models" guide, strided sliding window):
each document is tokenized once; windows of at most ``window`` tokens start at ``0, stride,
2*stride, ...`` until one reaches the end of the document; each window is a fresh sequence
(positions from 0) and predicts only the tokens that the previous window did not reach, so every
token is predicted exactly once with up to ``window - 1`` tokens of context. The first token of a
document has no context and is never predicted (as in the guide, where the label shift drops it);
with ``stride == window`` the first token of every later window is not predicted either (the
guide's non-overlapping case). Documents shorter than the window (ME-PPL sentences) are one window.

Perplexity is token-weighted: ``exp(total NLL / total predicted tokens)`` over the whole corpus.
:attr:`PerplexityResult.mean_document_ppl` (the mean over documents of each document's own
perplexity) is reported beside it because sentence-level studies sometimes average that way.
The ME-PPL release (``me_ppl/README.md``, Yang et al. 2024, "The Butterfly Effect of Model
Editing") states only the corpus sizes, not the averaging, so the token-weighted value is primary.

Windows of all documents are batched together (longest first, bounded by ``batch_size`` rows and
``max_tokens`` padded tokens); the vocabulary projection and log-softmax are computed only at
predicted positions, in chunks, so memory stays bounded for long corpora and large vocabularies.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

from ..data.corpora import load_corpus
from ..models.model import Model
from ..scoring import EncodedPair, keep_layer_cache, plan_layer_caches, score_encoded, sequences_key

__all__ = [
    "DEFAULT_COLLAPSE_THRESHOLD",
    "check_thresholds",
    "PerplexityResult",
    "is_collapsed",
    "perplexity",
]

#: Perplexity above which a model counts as collapsed (docs/architecture.md; Yang et al. 2024).
DEFAULT_COLLAPSE_THRESHOLD = 1000.0


def check_thresholds(threshold: float, ratio: float) -> None:
    """Refuse a threshold <= 0 or a ratio <= 1 (naming the field)."""
    if not threshold > 0:
        raise ValueError(f"collapse threshold={threshold}: must be a perplexity > 0 (the published line is 1000)")
    if not ratio > 1:
        raise ValueError(f"collapse ratio={ratio}: must be > 1 (perplexity this many times the base model's; e.g. 2)")


# --------------------------------------------------------------------------- #
# Perplexity
# --------------------------------------------------------------------------- #


@dataclass(frozen=True)
class PerplexityResult:
    """Perplexity of one corpus.

    Attributes:
        corpus: the corpus name (or ``"texts"`` for an unnamed list).
        ppl: token-weighted perplexity ``exp(nll / n_tokens)`` (the primary number).
        nll: total negative log-likelihood of all predicted tokens, in nats.
        n_tokens: number of predicted tokens (each document's first token is never predicted).
        per_document_nll: NLL of each document (nats), in input order.
        per_document_tokens: predicted tokens of each document (0 for a document of < 2 tokens).
        window: tokens per window (context + predicted); stride: window start offsets.
    """

    corpus: str
    ppl: float
    nll: float
    n_tokens: int
    per_document_nll: list[float]
    per_document_tokens: list[int]
    window: int
    stride: int

    @property
    def n_documents(self) -> int:
        return len(self.per_document_nll)

    @property
    def mean_nll(self) -> float:
        """Average NLL per predicted token (nats); ``log(ppl)``."""
        return self.nll / self.n_tokens

    @property
    def per_document_ppl(self) -> list[float]:
        """Each document's own perplexity (``nan`` for a document with no predicted token)."""
        return [math.exp(n / t) if t else math.nan
                for n, t in zip(self.per_document_nll, self.per_document_tokens)]

    @property
    def mean_document_ppl(self) -> float:
        """Mean over documents of the per-document perplexity (documents with no predicted token
        are left out). Secondary to :attr:`ppl`; dominated by short, surprising documents."""
        vals = [p for p, t in zip(self.per_document_ppl, self.per_document_tokens) if t]
        return float(sum(vals) / len(vals))

    def to_dict(self, per_document: bool = False) -> dict[str, Any]:
        """Plain dict (the per-document lists only when ``per_document``)."""
        d = asdict(self)
        if not per_document:
            d.pop("per_document_nll")
            d.pop("per_document_tokens")
        d.update(n_documents=self.n_documents, mean_nll=self.mean_nll, mean_document_ppl=self.mean_document_ppl)
        return d


def _encode_documents(model: Model, texts: Sequence[str], add_bos: bool | None) -> list[list[int]]:
    tok = model.tokenizer
    if add_bos is None:
        enc = tok(list(texts), add_special_tokens=True, return_special_tokens_mask=True, verbose=False)
        docs = []
        for ids, sp in zip(enc["input_ids"], enc["special_tokens_mask"]):
            lead = 1 if sp and sp[0] else 0  # keep a leading bos; drop appended eos/sep tokens
            end = len(ids)
            while end > lead and sp[end - 1]:
                end -= 1
            docs.append(list(ids[:end]))
        return docs
    docs = [list(ids) for ids in tok(list(texts), add_special_tokens=False, verbose=False)["input_ids"]]
    if add_bos:
        bos = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
        if bos is None:
            raise ValueError("add_bos=True but the tokenizer has neither a bos nor an eos token")
        docs = [d if d[:1] == [bos] else [bos] + d for d in docs]
    return docs


def _windows(n: int, window: int, stride: int) -> list[tuple[int, int, int]]:
    """``(begin, end, first)`` per window of a document of ``n`` tokens: the window holds tokens
    ``[begin, end)`` and predicts tokens ``[first, end)`` (HF guide loop)."""
    out = []
    if n < 2:
        return out
    begin, prev_end = 0, 0
    while True:
        end = min(begin + window, n)
        first = max(prev_end, begin + 1)
        if first < end:
            out.append((begin, end, first))
        prev_end = end
        if end == n:
            return out
        begin += stride


@torch.inference_mode()
def perplexity(
    model: Model,
    texts: Sequence[str] | str,
    *,
    window: int | None = None,
    stride: int | None = None,
    batch_size: int = 64,
    max_tokens: int = 2048,
    add_bos: bool | None = None,
    corpus: str | None = None,
    limit: int | None = None,
    keep_hidden: int | None = None,
    incremental: bool = True,
) -> PerplexityResult:
    """Token-weighted perplexity of ``model`` on ``texts`` with the strided sliding window.

    Args:
        texts: the documents; a single string is taken as a corpus name or path for
            :func:`load_corpus` (with ``limit``), never as a document (pass ``[text]`` for that).
        window: tokens per forward pass; default ``min(model.max_length, 1024)``.
        stride: offset between window starts, ``1 <= stride <= window``; default ``window // 2``.
            Each window predicts the tokens the previous one did not reach, giving them at least
            ``window - stride`` tokens of context (fewer only at the start of a document).
        batch_size: windows per forward pass.
        max_tokens: padded tokens per forward pass.
        add_bos: ``None`` (default) tokenizes with the tokenizer's own special tokens, as the HF
            guide does (a BOS for Llama-2-style tokenizers, none for GPT-2/SmolLM2 ones); ``True``
            prepends the BOS (the EOS when there is none, as lm-eval's rolling log-likelihood
            does) so that each document's first real token is predicted too; ``False`` adds none.
        corpus: name recorded in the result (default: the corpus name, else ``"texts"``).
        keep_hidden: as in :func:`editscope.evaluate`: on the base model keep the hidden states
            entering this block; an edit confined to blocks at or above it is then scored by
            running only those blocks (same result as a full pass).
        incremental: use the kept hidden states when they apply (as in :func:`editscope.evaluate`).

    Raises:
        ValueError: no documents, bad window/stride, or no document with a token to predict.
    """
    if isinstance(texts, str):
        corpus = corpus or texts
        texts = load_corpus(texts, limit=limit)
    elif limit is not None:
        texts = list(texts)[:limit]
    corpus = corpus or "texts"
    texts = list(texts)
    if not texts:
        raise ValueError(f"corpus {corpus!r} has no documents")
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"corpus {corpus!r}: document {i} must be a string, got {type(t).__name__}")
    if window is None:
        window = min(model.max_length or 1024, 1024)
    if stride is None:
        stride = max(1, window // 2)
    if window < 2:
        raise ValueError(f"window must be >= 2 tokens, got {window}")
    if model.max_length is not None and window > model.max_length:
        raise ValueError(f"window={window} exceeds the model's context of {model.max_length} tokens")
    if not 1 <= stride <= window:
        raise ValueError(f"stride must be in [1, window={window}], got {stride}")

    docs = _encode_documents(model, texts, add_bos)
    wins = [(d, b, e, f) for d, ids in enumerate(docs) for b, e, f in _windows(len(ids), window, stride)]
    if not wins:
        short = ", ".join(f"document {i} has {len(ids)} token(s)" for i, ids in list(enumerate(docs))[:3])
        raise ValueError(
            f"corpus {corpus!r} has no token to predict: every document needs at least 2 tokens "
            f"({short}{', ...' if len(docs) > 3 else ''})"
        )

    # Each window is a (context, predicted tokens) pair for the one scoring loop of scoring.py.
    pairs = [EncodedPair(tuple(docs[d][b:f]), tuple(docs[d][f:e])) for d, b, e, f in wins]
    key = "ppl:" + sequences_key([p.prompt_ids + p.cont_ids for p in pairs], batch_size, max_tokens, "right")
    capture, resume = plan_layer_caches(model, key, keep_hidden, incremental)
    scores = score_encoded(model, pairs, batch_size=batch_size, max_tokens=max_tokens,
                           capture=capture, resume=resume)
    if capture is not None:
        keep_layer_cache(model, key, capture)
    doc_nll = [0.0] * len(docs)
    doc_tok = [0] * len(docs)
    for (d, _, e, f), sc in zip(wins, scores):
        doc_nll[d] -= math.fsum(sc.token_logprobs)
        doc_tok[d] += e - f

    total_nll = float(math.fsum(doc_nll))
    total_tok = int(sum(doc_tok))
    return PerplexityResult(
        corpus=corpus, ppl=math.exp(total_nll / total_tok), nll=total_nll, n_tokens=total_tok,
        per_document_nll=doc_nll, per_document_tokens=doc_tok, window=window, stride=stride,
    )


def is_collapsed(
    ppl: float,
    threshold: float = DEFAULT_COLLAPSE_THRESHOLD,
    base_ppl: float | None = None,
    ratio: float | None = None,
) -> bool:
    """Whether a perplexity signals model collapse.

    The model-collapse study (Yang et al. 2024, "The Butterfly Effect of Model Editing: Few Edits
    Can Trigger Large Language Models Collapse") uses perplexity on ME-PPL as a surrogate for
    collapse: an edited model whose perplexity explodes has lost its general ability. Two tests:

    * absolute (default): ``ppl > threshold`` (default 1000, docs/architecture.md);
    * relative, when ``ratio`` is given: ``ppl > ratio * base_ppl``, with ``base_ppl`` the
      unedited model's perplexity on the same corpus with the same settings (then ``threshold``
      is not used).

    A non-finite ``ppl`` (``inf``/``nan``: the edited model produced overflowing or NaN logits)
    counts as collapsed.
    """
    if ratio is not None:
        if base_ppl is None:
            raise ValueError("ratio given without base_ppl: pass the unedited model's perplexity")
        if not (ratio > 0 and math.isfinite(ratio)):
            raise ValueError(f"ratio must be a positive finite number, got {ratio!r}")
        if not (base_ppl > 0 and math.isfinite(base_ppl)):
            raise ValueError(f"base_ppl must be a positive finite perplexity, got {base_ppl!r}")
        limit = ratio * base_ppl
    else:
        if base_ppl is not None:
            raise ValueError("base_ppl given without ratio: pass ratio= for a relative test "
                             "(or drop base_ppl for the absolute threshold)")
        if not (threshold > 0):
            raise ValueError(f"threshold must be positive, got {threshold!r}")
        limit = threshold
    if not math.isfinite(ppl):
        return True
    return ppl > limit
