"""The paper's bibliography: the BibTeX entries (references.bib beside this module) for the methods,
datasets, models, tools and statistics editscope uses, and which of them a stored study needs.

Every entry is the published version where there is one (venue, year, authors in full or "and
others" past the first authors of very long lists). A template may cite any key here, or add its
own entries in ``references.bib`` next to its sections.
"""

from __future__ import annotations

import re
from pathlib import Path

from ..report.data.results import StudyResults

#: the bibliography of every paper draft (references.bib beside this module)
BIB_FILE = Path(__file__).with_name("references.bib")


def _entries(text: str) -> dict[str, str]:
    """key -> entry of a BibTeX text with one entry per blank-line separated block (``%`` comment
    lines before the first entry are skipped)."""
    body = "\n".join(line for line in text.splitlines() if not line.startswith("%")).strip()
    out = {}
    for block in re.split(r"\n\s*\n(?=@)", body):
        keys = bib_keys(block)
        if len(keys) != 1:
            raise ValueError(f"{BIB_FILE}: a block holds {len(keys)} entries; separate entries by one blank line")
        out[keys[0]] = block.strip()
    return out


#: registry method name -> the papers it comes from
METHOD_KEYS: dict[str, tuple[str, ...]] = {
    "ft": ("zhu2020modifying",), "ft-constrained": ("zhu2020modifying",), "ft-l": ("zhu2020modifying", "meng2022locating"),
    "ft-m": ("zhang2024comprehensive",), "lora": ("hu2022lora", "mangrulkar2022peft"), "rome": ("meng2022locating",),
    "memit": ("meng2023memit",), "alphaedit": ("fang2025alphaedit",), "grace": ("hartvigsen2023aging",),
    "wise": ("wang2024wise",), "ike": ("zheng2023ike",),
}
#: dataset, corpus or downstream task name (prefix) -> its papers
DATA_KEYS: dict[str, tuple[str, ...]] = {
    "counterfact": ("meng2022locating",), "zsre": ("levy2017zero", "decao2021editing"), "mquake": ("zhong2023mquake",),
    "me_ppl": ("yang2024butterfly",), "wikitext": ("merity2017pointer",), "piqa": ("bisk2020piqa",),
    "hellaswag": ("zellers2019hellaswag",), "lambada": ("paperno2016lambada",), "sst2": ("socher2013recursive", "wang2019glue"),
    "glue": ("wang2019glue",), "rte": ("wang2019glue",), "mrpc": ("wang2019glue",), "qnli": ("wang2019glue",),
    "cola": ("wang2019glue",),
}
#: built-in model name prefix -> its report
MODEL_KEYS: dict[str, tuple[str, ...]] = {"smollm2": ("allal2025smollm2",), "gemma3": ("gemma2025gemma3",),
                                          "gemma-3": ("gemma2025gemma3",), "gpt2": ("radford2019language",)}
#: always used: the framework, the model library, and the statistics every report computes
BASE_KEYS = ("paszke2019pytorch", "wolf2020transformers", "wilson1927probable", "mcnemar1947note", "holm1979simple")


def _prefixed(name: str, table: dict[str, tuple[str, ...]]) -> tuple[str, ...]:
    name = name.lower()
    return next((keys for k, keys in table.items() if name.startswith(k)), ())


def study_keys(res: StudyResults) -> list[str]:
    """The citation keys a stored study needs: its methods' papers, its datasets, corpora and
    downstream tasks, its model, and the tools and statistics behind every number."""
    cfg = res.config
    keys: list[str] = [*BASE_KEYS, *_prefixed(str(res.meta.get("model_name", cfg.get("model", {}).get("name", ""))), MODEL_KEYS)]
    for m in cfg.get("methods", []):
        keys += METHOD_KEYS.get(m.get("method", ""), ())
    for e in cfg.get("edits", []):
        if e.get("dataset"):
            keys += _prefixed(e["dataset"], DATA_KEYS)
    if cfg.get("perplexity"):
        keys += _prefixed(str(cfg["perplexity"].get("corpus", "")), DATA_KEYS)
    for d in cfg.get("downstream") or []:
        keys += _prefixed(str(d.get("task", "")), DATA_KEYS)
    if cfg.get("downstream"):
        keys.append("gao2023harness")
    return list(dict.fromkeys(keys))


_CITE = re.compile(r"\\(?:cite|citep|citet|citealp|citeauthor|citeyear|nocite)\*?(?:\[[^\]]*\]){0,2}\{([^}]*)\}")


def cited_keys(tex: str) -> list[str]:
    """Every key a LaTeX text cites (``\\cite``, ``\\citep``, ``\\citet``, ... with optional notes)."""
    return list(dict.fromkeys(k.strip() for m in _CITE.finditer(tex) for k in m.group(1).split(",") if k.strip()))


def bib_keys(bib: str) -> list[str]:
    """The keys of the entries in a BibTeX text."""
    return re.findall(r"@\w+\s*\{\s*([^,\s]+)\s*,", bib)


#: key -> BibTeX entry, read from :data:`BIB_FILE`
ENTRIES: dict[str, str] = _entries(BIB_FILE.read_text(encoding="utf-8"))


def bibliography(keys: list[str], extra: str = "") -> str:
    """references.bib: the entries of ``keys`` (known here or in ``extra``, a user's BibTeX), each once."""
    own = set(bib_keys(extra))
    out = [ENTRIES[k] for k in dict.fromkeys(keys) if k in ENTRIES and k not in own]
    return "\n\n".join([*out, extra.strip()]).strip() + "\n"


__all__ = ["ENTRIES", "bib_keys", "bibliography", "cited_keys", "study_keys"]
