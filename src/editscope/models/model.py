"""`Model`: a loaded causal LM with its tokenizer and :class:`ArchSpec`, and `load_model`."""

from __future__ import annotations

import difflib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from .arch import ArchSpec, arch_for, max_positions, num_layers
from .packaged import DEFAULT_MODEL, PACKAGED_MODELS, local_gguf
from .state import InstalledIntervention, ModelState, fingerprint_of, state_key, tensor_digests, weights_fingerprint
from ..errors import CorruptFileError, InputError

KNOWN_MODELS: dict[str, str] = {name: src.description for name, src in PACKAGED_MODELS.items()}
_ALIASES = {"default": DEFAULT_MODEL, "smollm2-135m-instruct": DEFAULT_MODEL,
            "gemma-3-270m": "gemma3-270m", "gemma3": "gemma3-270m"}

_DTYPES = {
    "float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
    "float64": torch.float64, "fp64": torch.float64,
}


class UnknownModelError(InputError, ValueError):
    """A model name that is neither a known short name, a local directory nor a hub id."""


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype:
    """``None`` -> float32; strings like ``"bf16"`` -> ``torch.bfloat16``."""
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return _DTYPES[str(dtype).lower()]
    except KeyError:
        raise ValueError(f"dtype={dtype!r} is not known; use one of {sorted(_DTYPES)}") from None


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` -> ``cuda`` when available, else ``cpu``."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@dataclass
class Model:
    """A causal LM ready for scoring and editing.

    Attributes:
        hf: the ``transformers`` ``*ForCausalLM`` module (in eval mode).
        tokenizer: its fast tokenizer (offset mappings are required by scoring).
        arch: where its parts live (:class:`ArchSpec`).
        name: the name it was loaded by.
        state: what it carries between calls besides its weights (:class:`ModelState`: edit
            stack, memos, caches), one typed field per subsystem.
        interventions: site -> installed intervention, in installation order (written only by
            :mod:`editscope.interventions`); ``intervention_hooks``: their torch hook handles.
    """

    hf: nn.Module
    tokenizer: Any
    arch: ArchSpec
    name: str
    state: ModelState = field(default_factory=ModelState)
    interventions: dict[str, InstalledIntervention] = field(default_factory=dict)
    intervention_hooks: dict[str, Any] = field(default_factory=dict)

    def intervention_identities(self) -> dict[str, str]:
        """site -> identity of each installed intervention (part of :meth:`state_key`)."""
        return {site: iv.identity() for site, iv in self.interventions.items()}

    def first_intervened_layer(self) -> int | None:
        """Lowest block an installed intervention can change (0 for input interventions), or None."""
        layers = [iv.first_layer(self) for iv in self.interventions.values()]
        return min(layers) if layers else None

    @property
    def config(self):
        return self.hf.config

    @property
    def n_layers(self) -> int:
        return num_layers(self.hf)

    @property
    def device(self) -> torch.device:
        return next(self.hf.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.hf.parameters()).dtype

    @property
    def max_length(self) -> int | None:
        """Longest prompt+continuation the model accepts, in tokens (None: unbounded)."""
        return max_positions(self.hf.config)

    def module(self, role: str, layer: int | None = None) -> nn.Module:
        """The module playing ``role`` (an :class:`ArchSpec` field) at ``layer``."""
        return self.arch.module(self.hf, role, layer)

    def fingerprint(self) -> str:
        """Content hash of the current weights (changes with every edit)."""
        return weights_fingerprint(self.hf)

    @property
    def base_fingerprint(self) -> str:
        """Fingerprint of the base (unedited) weights: taken the first time it is asked for.

        Edit methods ask for it before changing any weight, so it always names the weights the
        model was loaded with; base outputs are cached under it.
        """
        if self.state.base_digests is None:
            self.state.base_digests = tensor_digests(self.hf)
        return fingerprint_of(self.state.base_digests)

    def state_key(self, digests: dict[str, str] | None = None) -> str:
        """What the model computes, as one key: the weights fingerprint when nothing is installed,
        else a hash of it and the identities of the installed interventions (GRACE codebooks, IKE
        contexts, ...). Every cache of model outputs keys on it. ``digests``: the current
        :func:`tensor_digests`, if already computed."""
        fp = fingerprint_of(digests) if digests is not None else self.fingerprint()
        return state_key(fp, self.intervention_identities())

    def clear_caches(self) -> None:
        """Free the hidden states kept in memory by ``evaluate(..., keep_hidden=l)``."""
        self.state.layer_caches.clear()

    def changed_tensors(self, now: dict[str, str] | None = None) -> list[str]:
        """Names of the tensors whose bytes differ from the base weights (``now``: current
        :func:`tensor_digests`, computed if not given)."""
        self.base_fingerprint  # noqa: B018  (records the base on first use)
        base = self.state.base_digests
        now = tensor_digests(self.hf) if now is None else now
        return sorted(n for n in set(base) | set(now) if base.get(n) != now.get(n))

    def first_changed_layer(self, changed: list[str] | None = None) -> int | None:
        """Lowest block index whose weights differ from the base or whose output an installed
        intervention changes; ``n_layers`` when only the final norm or head changed, 0 when
        anything before the first block changed (an input intervention: 0), None when nothing did.

        Blocks below it compute exactly what the base computed, so their outputs can be reused.
        """
        changed = self.changed_tensors() if changed is None else changed
        intervened = self.first_intervened_layer()
        if not changed:
            return intervened
        weights = self._first_weight_layer(changed)
        return weights if intervened is None else min(intervened, weights)

    def _first_weight_layer(self, changed: list[str]) -> int:
        """Lowest block among the changed tensor names (``n_layers``: final norm/head only)."""
        prefixes = [self.arch.name("layer", i) + "." for i in range(self.n_layers)]
        tail = (self.arch.final_norm + ".", self.arch.lm_head + ".")
        lowest = self.n_layers
        for name in changed:
            layer = next((i for i, p in enumerate(prefixes) if name.startswith(p)), None)
            if layer is not None:
                lowest = min(lowest, layer)
            elif not name.startswith(tail):
                return 0  # embeddings or anything else feeding block 0
        return lowest

    def __repr__(self) -> str:
        return (f"Model({self.name!r}, {self.config.model_type}, layers={self.n_layers}, "
                f"dtype={self.dtype}, device={self.device})")


def _finish(hf: nn.Module, tokenizer, name: str, provenance: dict[str, Any]) -> Model:
    arch = arch_for(hf.config)
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(
            f"the tokenizer of {name!r} is a slow (Python) tokenizer; editscope needs a fast tokenizer "
            "for offset mappings. Convert it with `tokenizers` or install `tokenizers`/`sentencepiece`."
        )
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token if tokenizer.eos_token is not None else tokenizer.unk_token
    hf.eval()
    model = Model(hf=hf, tokenizer=tokenizer, arch=arch, name=name, state=ModelState(provenance=provenance))
    arch.module(hf, "lm_head")  # fail now, not mid-study, if the spec does not fit this class
    return model


def from_modules(hf: nn.Module, tokenizer, name: str = "custom") -> Model:
    """Wrap an already constructed HF causal LM and tokenizer as a :class:`Model`."""
    return _finish(hf, tokenizer, name, {"source": "in-memory"})


@dataclass(frozen=True)
class ModelSource:
    """Names that a higher layer can build a model folder for: ``names()`` lists them (lower
    case), ``build(name)`` returns ``(folder with config.json and safetensors, canonical name)``.
    Derived-model recipes (:mod:`editscope.models.derive`) register one; :func:`load_model` asks
    the registered sources after the built-in names, local paths and hub ids."""

    names: Callable[[], Iterable[str]]
    build: Callable[[str], tuple[Path, str]]


_SOURCES: list[ModelSource] = []


def register_model_source(source: ModelSource) -> None:
    """Let :func:`load_model` build the names ``source`` knows (see :class:`ModelSource`)."""
    _SOURCES.append(source)


def _source_names() -> list[str]:
    return [n for s in _SOURCES for n in s.names()]


def load_model(
    name_or_path: str | os.PathLike,
    dtype: str | torch.dtype | None = None,
    device: str | torch.device | None = None,
    *,
    trust_remote_code: bool = False,
    revision: str | None = None,
) -> Model:
    """Load a causal LM by short name, local directory or hub id.

    Args:
        name_or_path: a built-in name (``"smollm2-135m"``, the default, or ``"gemma3-270m"``: offline,
            from their PyPI packages), a local ``.gguf`` file (dequantised once and cached), a local
            directory with ``config.json`` and ``*.safetensors``, or a hub id ``"org/name"`` (needs
            network or the local HF cache).
        dtype: parameter dtype; default float32.
        device: default ``cuda`` if available else ``cpu``.
        trust_remote_code: allow model code from the hub; off unless you ask.
        revision: hub revision (branch, tag or commit) for reproducible hub loads.

    Weights are read from safetensors only (never pickle).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch_dtype = resolve_dtype(dtype)
    dev = resolve_device(device)
    name = str(name_or_path)
    key = _ALIASES.get(name.lower(), name.lower())
    kwargs: dict[str, Any] = {}
    if key in PACKAGED_MODELS:
        source: str = str(PACKAGED_MODELS[key].ensure_cache())
        name = key
    elif name.lower().endswith(".gguf") and Path(name).expanduser().is_file():
        gguf = local_gguf(Path(name))
        source, name = str(gguf.ensure_cache()), gguf.name
    elif Path(name).expanduser().is_dir():
        folder = Path(name).expanduser()
        if not any(folder.glob("*.safetensors")):
            raise ValueError(
                f"{folder} holds no *.safetensors weights; editscope never loads pickle checkpoints. "
                "Convert with `model.save_pretrained(dir, safe_serialization=True)` in a trusted session."
            )
        source = str(folder)
    elif "/" in name and not name.startswith((".", "/", "~")):
        source, kwargs = name, {"revision": revision}
    elif src := next((s for s in _SOURCES if key in s.names()), None):
        folder, name = src.build(key)
        source = str(folder)
    else:
        close = difflib.get_close_matches(key, list(KNOWN_MODELS) + list(_ALIASES) + _source_names(), n=1)
        hint = f" Did you mean {_ALIASES.get(close[0], close[0])!r}?" if close else ""
        raise UnknownModelError(
            f"unknown model {name!r}.{hint} Known names: {', '.join(KNOWN_MODELS)}. "
            "Pass a hub id as 'org/name' (e.g. 'openai-community/gpt2', 'meta-llama/Llama-3.2-1B'; "
            "needs network or the HF cache) or a local directory holding config.json and safetensors."
        )
    local = Path(source).is_dir()
    if local:
        check_model_folder(Path(source))
    try:
        hf = AutoModelForCausalLM.from_pretrained(
            source, dtype=torch_dtype, trust_remote_code=trust_remote_code, use_safetensors=True, **kwargs
        ).to(dev)
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code, **kwargs)
    except Exception as e:
        if not local:
            if isinstance(e, OSError):
                raise _hub_error(name, e) from e
            raise
        raise CorruptFileError(f"{source}: the model folder cannot be loaded ({type(e).__name__}: "
                               f"{str(e).splitlines()[0] if str(e) else ''}); check config.json, the tokenizer files "
                               "and *.safetensors") from e
    return _finish(hf, tokenizer, name, {"source": source, "revision": revision})


def check_model_folder(folder: Path) -> None:
    """Refuse a local model folder whose config.json or safetensors files cannot be read, naming
    the file (before transformers would fail deep inside with a less helpful error)."""
    from safetensors import SafetensorError, safe_open

    cfg = folder / "config.json"
    if not cfg.is_file():
        raise CorruptFileError(f"{folder}: no config.json; a model folder needs config.json and *.safetensors")
    try:
        json.loads(cfg.read_bytes().decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CorruptFileError(f"{cfg}: not valid JSON ({e}); the model folder is damaged") from None
    for f in sorted(folder.glob("*.safetensors")):
        try:
            with safe_open(str(f), framework="pt") as st:
                st.keys()
        except (SafetensorError, OSError) as e:
            raise CorruptFileError(f"{f}: not a readable safetensors file ({e}); the model folder is damaged "
                                   "or still being copied") from None


def _hub_error(name: str, e: OSError) -> OSError:
    offline = " (HF_HUB_OFFLINE is set)" if os.environ.get("HF_HUB_OFFLINE") else ""
    return OSError(
        f"could not load model {name!r}{offline}: {e}\nA hub id needs network access or a copy in "
        "the local Hugging Face cache; a model without safetensors weights is refused. "
        "Alternatively pass a local directory with config.json and *.safetensors.")


