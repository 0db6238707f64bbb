"""SERAC's scope classifier (Mitchell et al., 2022, "Memory-Based Model Editing at Scale", ICML) and
its training.

SERAC keeps edits in a memory, and a trained scope classifier decides for each input whether an
edit in memory applies; inputs in scope are answered by a counterfactual model given the edit,
inputs out of scope by the base model, untouched. Read from EasyEdit's port
(github.com/zjunlp/EasyEdit, ``easyeditor/trainer/algs/SERAC.py`` at e7919e6,
``hparams/TRAINING/SERAC/gpt2-xl.yaml``): for decoder models it uses the embedding classifier
(``cross_attend: false``; a sentence encoder embeds the edit and the input, their similarity is the
score), lr 1e-5, batches of 10, and a separately trained small counterfactual model (GPT-2 for GPT-2 XL).

Here: the classifier is all-MiniLM-L6-v2 (offline, the encoder IKE retrieves with) fine-tuned
whole, score ``sigmoid(scale * cos(e(edit), e(input)) + bias)`` with ``scale`` and ``bias`` learned
(the reference uses the negative squared distance, ``square: true``; cosine is its normalised form),
trained with binary cross-entropy on, per record: the edit against its paraphrase and its own
prompt (in scope), its neighbourhood prompt (a hard negative: same relation, another subject) and
another record's paraphrase (out of scope). The classifier reads text only, so one classifier
serves every model. Deviation, deliberate: the counterfactual model is the edited model itself
reading the edit in context (IKE's format without demonstrations), not a second trained model:
an editscope edit acts on one model, and routing a row to another network would need a model
router in every scoring path. Inputs out of scope are exactly the base model's, as in SERAC.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..embeddings import encoder_path
from .records import TrainingRecord


def fact_text(prompt: str, continuation: str) -> str:
    """An edit as the classifier and the counterfactual prompt read it: ``prompt + continuation``."""
    return f"{prompt}{continuation}"


class ScopeClassifier(nn.Module):
    """``P(input in scope of edit)`` from a fine-tuned sentence encoder's cosine similarity."""

    def __init__(self, encoder: str):
        super().__init__()
        from sentence_transformers import SentenceTransformer

        self.encoder = SentenceTransformer(encoder_path(encoder), device="cpu", trust_remote_code=False)
        self.scale = nn.Parameter(torch.tensor(10.0))
        self.bias = nn.Parameter(torch.tensor(-5.0))

    def embed(self, texts: list[str]) -> torch.Tensor:
        """L2-normalised embeddings ``[n, d]`` (differentiable when grad is enabled)."""
        features = self.encoder.preprocess(texts)
        out = self.encoder(features)["sentence_embedding"]
        return torch.nn.functional.normalize(out.float(), dim=-1)

    def logits(self, edits: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        """``[n_inputs, n_edits]`` logits from embeddings."""
        return self.scale * (inputs @ edits.T) + self.bias


class SeracTrainer:
    """The scope classifier's training for :func:`editscope.editors.store.train_editor`."""

    parts = ("loss", "accuracy")

    def __init__(self, spec: Any, model: Any = None):
        self.spec = spec
        self.module = ScopeClassifier(spec.encoder).train()
        self.grad_clip = spec.grad_clip

    def param_groups(self) -> list[dict[str, Any]]:
        return [{"params": list(self.module.parameters()), "lr": self.spec.lr}]

    def accumulate(self, records: list[TrainingRecord]) -> dict[str, float]:
        edits = [fact_text(r.request.prompt, r.request.continuation) for r in records]
        pairs: list[tuple[int, str, float]] = []
        for i, r in enumerate(records):
            if r.paraphrase is not None:
                pairs.append((i, r.paraphrase.prompt, 1.0))
            pairs.append((i, r.request.prompt, 1.0))
            if r.locality is not None:
                pairs.append((i, r.locality.prompt, 0.0))
            other = records[(i + 1) % len(records)]
            if len(records) > 1 and other.request.prompt != r.request.prompt:
                pairs.append((i, (other.paraphrase or other.request).prompt, 0.0))
        queries = list(dict.fromkeys(q for _, q, _ in pairs))
        emb = self.module.embed(edits + queries)
        e, q = emb[:len(edits)], emb[len(edits):]
        where = {t: k for k, t in enumerate(queries)}
        logits = self.module.logits(e, q)[[where[t] for _, t, _ in pairs], [i for i, _, _ in pairs]]
        labels = torch.tensor([y for _, _, y in pairs])
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels)
        loss.backward()
        return {"loss": loss.item(), "accuracy": float(((logits > 0).float() == labels).float().mean())}

    def tensors(self) -> dict[str, torch.Tensor]:
        return {k: v.detach() for k, v in self.module.state_dict().items()}

    def load_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        self.module.load_state_dict(tensors)

    def manifest(self) -> dict[str, Any]:
        return {"encoder": self.spec.encoder}


@lru_cache(maxsize=4)
def load_classifier(folder: str) -> ScopeClassifier:
    """The trained classifier in ``folder`` (kept loaded: an installed SERAC edit reads it for every prompt)."""
    import json

    from safetensors.torch import load_file

    manifest = json.loads((Path(folder) / "manifest.json").read_text())
    clf = ScopeClassifier(manifest["encoder"])
    clf.load_state_dict(load_file(str(Path(folder) / "editor.safetensors")))
    return clf.eval()


__all__ = ["ScopeClassifier", "SeracTrainer", "fact_text", "load_classifier"]
