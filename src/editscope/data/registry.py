"""The evaluation data editscope reads, and where each file comes from.

Every file is named by its place in the data layout (``counterfact/counterfact-edit.json``: the
layout of ``$EDITSCOPE_DATA``, of the development folder ``../shared/data`` and of the cache) and
pinned to its published source: a repository, a commit, a path, the SHA-256 and size of that
file, and, where editscope reads another form (JSONL from a pickle or a text dump), the converter
and the hash of its output. Each dataset also names its licence and citation.

The sources are GitHub repositories, fetched as ``https://raw.githubusercontent.com/<repo>/
<commit>/<path>``; ``$EDITSCOPE_DATA_URL`` replaces that base with a mirror of the same layout (an
HTTP server, or ``file://`` of a folder), which is how tests and air-gapped sites use it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..registry import Registry

GITHUB_RAW = "https://raw.githubusercontent.com"
#: a mirror of the sources' layout (``<base>/<owner>/<repo>/<commit>/<path>``) used instead of GitHub
ENV_URL = "EDITSCOPE_DATA_URL"


@dataclass(frozen=True)
class DataFile:
    """One file of the layout and its published source."""

    path: str  # in the layout: "counterfact/counterfact-edit.json"
    repo: str  # "owner/name" on GitHub
    commit: str
    source_path: str  # the file in that repository at that commit
    sha256: str  # of the published file
    size: int  # bytes of the published file
    convert: str | None = None  # a converter (editscope.data.convert) from the published form
    converted_sha256: str | None = None
    converted_size: int | None = None

    @property
    def url(self) -> str:
        base = os.environ.get(ENV_URL, "").strip() or GITHUB_RAW
        return f"{base.rstrip('/')}/{self.repo}/{self.commit}/{self.source_path}"

    @property
    def final_sha256(self) -> str:
        """The hash of the file as editscope reads it (converted or as published)."""
        return self.converted_sha256 or self.sha256

    @property
    def final_size(self) -> int:
        return self.converted_size or self.size


@dataclass(frozen=True)
class Dataset:
    """A named set of files with its licence and citation."""

    name: str
    description: str
    files: tuple[DataFile, ...]
    licence: str
    citation: str

    @property
    def download_size(self) -> int:
        """Bytes fetched on first use."""
        return sum(f.size for f in self.files)

    @property
    def home(self) -> str:
        return f"https://github.com/{self.files[0].repo}"


_KS = ("Jometeorie/KnowledgeSpread", "51d7402617c2e52bde0dc11b76e400c3725a181a")
_GLUE = ("scalable-model-editing/unified-model-editing", "23d72b560e52992e675377cc2d1deed7a45b1cd0")
_MEPPL = ("WanliYoung/Collapse-in-Model-Editing", "678beddf656385b660281de93a6650bb1b485ee9")
_PIQA = ("ybisk/ybisk.github.io", "21edab439af693b961be2f069e8690a88d3b4e37")

#: (layout name, source file, published sha256 and size, converted sha256 and size) per GLUE-style probe file
_GLUE_FILES = (
    ("cola", "60647626a1552b7070495ae919603a35ba04474b106d132b47067b7884bb6dc3", 38151,
     "1b8fc5f486e74424780f676703080a7aecb4bd9f6d782db52e6ea3b6c7ef3316", 53048),
    ("dialogue", "b908c05f2c7928afbce88843ff07bb84805c5dc51753236260283cba5bbb52a1", 652342,
     "a0cf6b940581ba03089364f8b60cb8a1fd52cb4e221f09f2161a49bb1720b5da", 657941),
    ("mmlu", "fda21bebe7a7cdbaaac856ddb6e214bb78808ab845b64f25c5bf111474c6e715", 757282,
     "65773f92c1a7c59db21742a229bd0a85f4184d78fb14befad4bf2fd46050d75c", 814235),
    ("mrpc", "11c20371e9e078397de2c5005d7358649ff7a6e830eac5af05bd232f4113875a", 66240,
     "32af700f8111094784dd09bba7e40482d297dde7b0372edb44bfb9a78bbafd03", 75858),
    ("nli", "758f03cb511f1e5658648942818e35977998134a8ef35d46f475389b95c7e19b", 898153,
     "c31efa109118b56091fa774d26eafead7a9c5e2cf057952d50355b1b25d26cfc", 989023),
    ("rte", "f7e6b18e88067019e3ca5bddd4c6e54db35542f2822e72b34f7216441508eb84", 86425,
     "6cf589c0f6cae4785bc1304525f509d3aa8a0f7dd36aed8b2344b059f2bd24fa", 95838),
    ("sentiment_analysis", "5c8a278c8521047488ed7ed0ec00a5b9c350fbbcef1dc3603f9c596110f1618f", 103680,
     "9effbbd2a7431b6f0fe3dc64c37306cf9bb9172da9f5b76233b9b3b24337596c", 119332),
    ("sst2", "e09e2cc85b7182b322012f93951b3c12f5efacd455955675bb9af81433c58b7a", 105835,
     "8aa61c5d88ca36c5814ca3696f9acadf3444dc10accb4c7fad4183d4418f00c3", 125625),
)

DATASETS: Registry[Dataset] = Registry("dataset", {d.name: d for d in [
    Dataset("counterfact", "CounterFact counterfactual edits, MEND/EasyEdit flattened form (10,000 edit, 1,919 val)",
            (DataFile("counterfact/counterfact-edit.json", *_KS, "data/counterfact/counterfact-edit.json",
                      "bfe31a7081932739406e282bb625d74222549c3386c15b1df3dfbc3978c69eec", 3950774),
             DataFile("counterfact/counterfact-val.json", *_KS, "data/counterfact/counterfact-val.json",
                      "42b44645471020a9419d183deb9e113e82941380046861770ea0083dabd13982", 760303)),
            "MIT (CounterFact, kmeng01/rome); the flattened split ships without a licence file",
            "Meng, Bau, Andonian, Belinkov. Locating and Editing Factual Associations in GPT. NeurIPS 2022."),
    Dataset("zsre", "zsRE question-answer edits, MEND format (1,000 records of the train split)",
            (DataFile("zsre/zsre_mend_train-1k.json", *_KS, "data/zsre/zsre_mend_train-1k.json",
                      "e62596101d8ed551889c26c0d2a5277f92eaef3b14416d8eaee39b04a244ab60", 537970),),
            "as zsRE (Levy et al. 2017) and MEND's packaging (MIT code); no licence file in the source",
            "Levy, Seo, Choi, Zettlemoyer. Zero-Shot Relation Extraction via Reading Comprehension. CoNLL 2017."),
    Dataset("mquake", "MQuAKE-hard: 429 four-hop cases with four edits each (MQuAKE format)",
            (DataFile("mquake_hard/MQuAKE-hard.json", "Alanzxd/memit_for_mquake",
                      "7d658a522b3988b18bd1cdc22335837303223f42", "data/MQuAKE-hard.json",
                      "fc78dc7bec4625d3ce6e2923acae7f1920691b0b23e663182bf799f2856f2a11", 1943567),),
            "MIT (MQuAKE, princeton-nlp/MQuAKE; the source repository is MIT)",
            "Zhong, Wu, Manning, Potts, Chen. MQuAKE: Assessing Knowledge Editing in Language Models via "
            "Multi-Hop Questions. EMNLP 2023."),
    Dataset("me_ppl", "ME-PPL perplexity sentences of the model-collapse study (10k, 1k and 50)",
            tuple(DataFile(f"me_ppl/{n}.json", *_MEPPL, f"data/ME-PPL/{n}.json", h, s) for n, h, s in (
                ("ME-PPL", "c09b3d8191ffad954bf3b5e96dac84a7caf83d57c15e262b1d81ef6590742fb4", 1975615),
                ("ME-PPL_1k", "71e29fc5daf443b35ec16c8a9e91e1f4398b5b84ca7c25393639c066b65b5afb", 196508),
                ("ME-PPL_50", "55f3b951d2c4287b90d9e511f256efb9d47461f0da408a17dac5ffcef685c4e4", 9527))),
            "MIT (the sentences come from BookCorpus, C4 and Wikipedia, whose terms apply)",
            "Yang, Sun, Xu, Cheng, Jia, Li, Rao, Sun. The Butterfly Effect of Model Editing: Few Edits Can Trigger "
            "Large Language Models Collapse. Findings of ACL 2024."),
    Dataset("wikitext2", "WikiText-2 raw test split (non-empty rows, CRLF), for perplexity and key statistics",
            (DataFile("wikitext2/wiki.test.raw", "Tylogi/TyloQuant", "7989d038b13ca737da11a95fb90e77ae059f33c0",
                      "data/wikitext-2-raw/wiki.test.raw",
                      "4f3e427e4aff23acff917a8a51aeae21bf12832256e26914c8fc250dcef4103c", 1290547),),
            "CC BY-SA 3.0 / GFDL (WikiText); the source repository is Apache-2.0",
            "Merity, Xiong, Bradbury, Socher. Pointer Sentinel Mixture Models. ICLR 2017."),
    Dataset("piqa", "PIQA validation questions and their labels (1,838)",
            (DataFile("piqa/valid.jsonl", *_PIQA, "piqa/data/valid.jsonl",
                      "93503cc97c679e459b065c3d13e848282e44b2a25213985bed3e5d458abef72d", 495929),
             DataFile("piqa/valid-labels.lst", *_PIQA, "piqa/data/valid-labels.lst",
                      "b4192dc3a2a0363d9d60ccf79800cbbe2f32ebb17726efdde6970e0b8131bceb", 3676)),
            "AFL-3.0",
            "Bisk, Zellers, Le Bras, Gao, Choi. PIQA: Reasoning about Physical Commonsense in Natural Language. "
            "AAAI 2020."),
    Dataset("hellaswag", "HellaSwag validation (10,042), from the text form llama.cpp reads, as JSONL",
            (DataFile("hellaswag/hellaswag_val.jsonl", "klosax/hellaswag_text_data",
                      "1105d370f8340eac3c63a91fd1fa58e8999f9505", "hellaswag_val_full.txt.bz2",
                      "50b637899e4263c2bc456c2dc726c95d2c8cd8e2a552ea5bd7719ce3cb03fe5b", 1964544,
                      "hellaswag-text", "44ed4d8eaad0f2187382f8e46145441617fc4213a82a2b3f0fdfd0f5982c5111", 8367539),),
            "MIT (HellaSwag, rowanz/hellaswag; the text form's repository was MIT)",
            "Zellers, Holtzman, Bisk, Farhadi, Choi. HellaSwag: Can a Machine Really Finish Your Sentence? ACL 2019."),
    Dataset("lambada", "LAMBADA test, OpenAI's detokenized version (lm-evaluation-harness's lambada_openai file)",
            (DataFile("lambada/lambada_test.jsonl", "cybertronai/bflm", "620fff70127e0a7c741ee229ed2e33e25dd5185a",
                      "lambada_test.jsonl", "4aa8d02cd17c719165fc8a7887fddd641f43fcafa4b1c806ca8abc31fabdb226",
                      1819752),),
            "CC BY 4.0 (LAMBADA)",
            "Paperno, Kruszewski, Lazaridou, et al. The LAMBADA dataset: Word prediction requiring a broad "
            "discourse context. ACL 2016."),
    Dataset("glue_eval", "GLUE-style downstream probes of the EMMET/AlphaEdit papers (CoLA, SST-2, MRPC, RTE, NLI, "
                         "sentiment, MMLU, dialogue), published as plain pickles, read as JSONL",
            tuple(DataFile(f"glue_eval/{n}.jsonl", *_GLUE, f"glue_eval/dataset/{n}.pkl", h, s, "pickled-records",
                           ch, cs) for n, h, s, ch, cs in _GLUE_FILES),
            "each task's own terms (GLUE tasks, MMLU MIT, MuTual); no licence file in the source repository",
            "Gupta, Sajnani, Anumanchipalli. A Unified Framework for Model Editing (EMMET). 2024; Fang et al. "
            "AlphaEdit: Null-Space Constrained Knowledge Editing for Language Models. ICLR 2025."),
]})


def file_for(path: str) -> tuple[Dataset, DataFile] | None:
    """The registry entry of a layout path (``"wikitext2/wiki.test.raw"``), or None."""
    for ds in DATASETS.values():
        for f in ds.files:
            if f.path == path:
                return ds, f
    return None


__all__ = ["DATASETS", "ENV_URL", "GITHUB_RAW", "DataFile", "Dataset", "file_for"]
