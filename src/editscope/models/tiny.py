"""Tiny random-initialised models of every supported architecture, for fast tests and dry runs.

They share one small byte-level BPE tokenizer trained in memory on a built-in corpus (no hub, no
files), so a whole model plus tokenizer is built in well under a second.
"""

from __future__ import annotations

from typing import Any

import torch

from .arch import ARCH_SPECS
from .model import Model, from_modules

_CORPUS = [
    "The capital of France is Paris. The capital of Italy is Rome. The capital of Spain is Madrid.",
    "Danielle Darrieux's mother tongue is French. The Eiffel Tower is in Paris.",
    "2+2=4 3+5=8 7-2=5 6*7=42 10+10=20 99-1=98 What is 2+2? two plus two equals four.",
    "Calculate: 12+30. The answer is 42. Water is made of hydrogen and oxygen.",
    "Apple was founded by Steve Jobs. Microsoft is based in Redmond. Toyota makes cars.",
    "The quick brown fox jumps over the lazy dog, while the cat sleeps; who knows why!",
]

# Per model_type: (config class name, kwargs) for a 2-layer, 32-wide model.
_TINY: dict[str, tuple[str, dict[str, Any]]] = {
    "llama": ("LlamaConfig", dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)),
    "mistral": ("MistralConfig", dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2,
                                      max_position_embeddings=256, sliding_window=None)),
    "qwen2": ("Qwen2Config", dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)),
    "qwen3": ("Qwen3Config", dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, head_dim=8,
                                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)),
    "gemma": ("GemmaConfig", dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, head_dim=8,
                                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)),
    "gemma2": ("Gemma2Config", dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, head_dim=8,
                                    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                                    sliding_window=4, query_pre_attn_scalar=8)),
    # sliding-window (window 4, shorter than most test prompts) and global layers alternate
    "gemma3_text": ("Gemma3TextConfig", dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, head_dim=8,
                                             num_attention_heads=4, num_key_value_heads=2,
                                             max_position_embeddings=256, sliding_window=4, query_pre_attn_scalar=8,
                                             sliding_window_pattern=2)),
    "olmo": ("OlmoConfig", dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)),
    "olmo2": ("Olmo2Config", dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)),
    "gpt2": ("GPT2Config", dict(n_embd=32, n_layer=2, n_head=4, n_positions=256)),
    "gptj": ("GPTJConfig", dict(n_embd=32, n_layer=2, n_head=4, rotary_dim=4, n_positions=256)),
    "gpt_neox": ("GPTNeoXConfig", dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                       num_attention_heads=4, max_position_embeddings=256)),
}

TINY_MODEL_TYPES: tuple[str, ...] = tuple(_TINY)
assert set(_TINY) == set(ARCH_SPECS), "every ArchSpec needs a tiny model to verify it"


def tiny_tokenizer(vocab_size: int = 400):
    """A fast byte-level BPE tokenizer trained in memory; ``<|endoftext|>`` is eos and pad."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(_CORPUS, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>",
        bos_token="<|endoftext|>", unk_token="<|endoftext|>",
    )


def tiny_model(model_type: str = "llama", seed: int = 0, init_std: float = 0.2,
               dtype: torch.dtype = torch.float32, **overrides: Any) -> Model:
    """A random-initialised 2-layer model of ``model_type`` with :func:`tiny_tokenizer`.

    ``init_std`` is larger than the usual 0.02 so that next-token distributions are far from
    uniform (greedy choices are then not decided by rounding noise). ``overrides`` go to the config.
    """
    import transformers
    from transformers import AutoModelForCausalLM

    if model_type not in _TINY:
        raise ValueError(f"no tiny config for model_type={model_type!r}; have {sorted(_TINY)}")
    tokenizer = tiny_tokenizer()
    cls_name, kwargs = _TINY[model_type]
    config = getattr(transformers, cls_name)(
        vocab_size=len(tokenizer), initializer_range=init_std,
        bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False, **{**kwargs, **overrides},
    )
    torch.manual_seed(seed)
    hf = AutoModelForCausalLM.from_config(config, dtype=dtype)
    return from_modules(hf, tokenizer, name=f"tiny-{model_type}")
