"""The paper's bibliography: BibTeX entries for the methods, datasets, models, tools and statistics
editscope uses, and which of them a stored study needs.

Every entry is the published version where there is one (venue, year, authors in full or "and
others" past the first authors of very long lists). A template may cite any key here, or add its
own entries in ``references.bib`` next to its sections.
"""

from __future__ import annotations

import re

from ..report.results import StudyResults

ENTRIES: dict[str, str] = {
    # ---- methods
    "meng2022locating": """@inproceedings{meng2022locating,
  title = {Locating and Editing Factual Associations in {GPT}},
  author = {Meng, Kevin and Bau, David and Andonian, Alex and Belinkov, Yonatan},
  booktitle = {Advances in Neural Information Processing Systems},
  volume = {35},
  year = {2022}
}""",
    "meng2023memit": """@inproceedings{meng2023memit,
  title = {Mass-Editing Memory in a Transformer},
  author = {Meng, Kevin and Sharma, Arnab Sen and Andonian, Alex and Belinkov, Yonatan and Bau, David},
  booktitle = {International Conference on Learning Representations},
  year = {2023}
}""",
    "fang2025alphaedit": """@inproceedings{fang2025alphaedit,
  title = {{AlphaEdit}: Null-Space Constrained Knowledge Editing for Language Models},
  author = {Fang, Junfeng and Jiang, Houcheng and Wang, Kun and Ma, Yunshan and Wang, Xiang and He, Xiangnan and Chua, Tat-Seng},
  booktitle = {International Conference on Learning Representations},
  year = {2025}
}""",
    "zhu2020modifying": """@article{zhu2020modifying,
  title = {Modifying Memories in Transformer Models},
  author = {Zhu, Chen and Rawat, Ankit Singh and Zaheer, Manzil and Bhojanapalli, Srinadh and Li, Daliang and Yu, Felix and Kumar, Sanjiv},
  journal = {arXiv preprint arXiv:2012.00363},
  year = {2020}
}""",
    "zhang2024comprehensive": """@article{zhang2024comprehensive,
  title = {A Comprehensive Study of Knowledge Editing for Large Language Models},
  author = {Zhang, Ningyu and Yao, Yunzhi and Tian, Bozhong and Wang, Peng and Deng, Shumin and Wang, Mengru and Xi, Zekun and Mao, Shengyu and Zhang, Jintian and Ni, Yuansheng and others},
  journal = {arXiv preprint arXiv:2401.01286},
  year = {2024}
}""",
    "hu2022lora": """@inproceedings{hu2022lora,
  title = {{LoRA}: Low-Rank Adaptation of Large Language Models},
  author = {Hu, Edward J. and Shen, Yelong and Wallis, Phillip and Allen-Zhu, Zeyuan and Li, Yuanzhi and Wang, Shean and Wang, Lu and Chen, Weizhu},
  booktitle = {International Conference on Learning Representations},
  year = {2022}
}""",
    "hartvigsen2023aging": """@inproceedings{hartvigsen2023aging,
  title = {Aging with {GRACE}: Lifelong Model Editing with Discrete Key-Value Adaptors},
  author = {Hartvigsen, Thomas and Sankaranarayanan, Swami and Palangi, Hamid and Kim, Yoon and Ghassemi, Marzyeh},
  booktitle = {Advances in Neural Information Processing Systems},
  volume = {36},
  year = {2023}
}""",
    "wang2024wise": """@inproceedings{wang2024wise,
  title = {{WISE}: Rethinking the Knowledge Memory for Lifelong Model Editing of Large Language Models},
  author = {Wang, Peng and Li, Zexi and Zhang, Ningyu and Xu, Ziwen and Yao, Yunzhi and Jiang, Yong and Xie, Pengjun and Huang, Fei and Chen, Huajun},
  booktitle = {Advances in Neural Information Processing Systems},
  volume = {37},
  year = {2024}
}""",
    "zheng2023ike": """@inproceedings{zheng2023ike,
  title = {Can We Edit Factual Knowledge by In-Context Learning?},
  author = {Zheng, Ce and Li, Lei and Dong, Qingxiu and Fan, Yuxuan and Wu, Zhiyong and Xu, Jingjing and Chang, Baobao},
  booktitle = {Proceedings of the 2023 Conference on Empirical Methods in Natural Language Processing},
  pages = {4862--4876},
  year = {2023}
}""",
    "mitchell2022mend": """@inproceedings{mitchell2022mend,
  title = {Fast Model Editing at Scale},
  author = {Mitchell, Eric and Lin, Charles and Bosselut, Antoine and Finn, Chelsea and Manning, Christopher D.},
  booktitle = {International Conference on Learning Representations},
  year = {2022}
}""",
    "decao2021editing": """@inproceedings{decao2021editing,
  title = {Editing Factual Knowledge in Language Models},
  author = {De Cao, Nicola and Aziz, Wilker and Titov, Ivan},
  booktitle = {Proceedings of the 2021 Conference on Empirical Methods in Natural Language Processing},
  pages = {6491--6506},
  year = {2021}
}""",
    # ---- evaluations of editing
    "yao2023editing": """@inproceedings{yao2023editing,
  title = {Editing Large Language Models: Problems, Methods, and Opportunities},
  author = {Yao, Yunzhi and Wang, Peng and Tian, Bozhong and Cheng, Siyuan and Li, Zhoubo and Deng, Shumin and Chen, Huajun and Zhang, Ningyu},
  booktitle = {Proceedings of the 2023 Conference on Empirical Methods in Natural Language Processing},
  pages = {10222--10240},
  year = {2023}
}""",
    "yang2024butterfly": """@inproceedings{yang2024butterfly,
  title = {The Butterfly Effect of Model Editing: Few Edits Can Trigger Large Language Models Collapse},
  author = {Yang, Wanli and Sun, Fei and Ma, Xinyu and Liu, Xun and Yin, Dawei and Cheng, Xueqi},
  booktitle = {Findings of the Association for Computational Linguistics: ACL 2024},
  pages = {5419--5437},
  year = {2024}
}""",
    "gupta2024model": """@inproceedings{gupta2024model,
  title = {Model Editing at Scale leads to Gradual and Catastrophic Forgetting},
  author = {Gupta, Akshat and Rao, Anurag and Anumanchipalli, Gopala},
  booktitle = {Findings of the Association for Computational Linguistics: ACL 2024},
  year = {2024}
}""",
    "hoelscher2023detecting": """@inproceedings{hoelscher2023detecting,
  title = {Detecting Edit Failures In Large Language Models: An Improved Specificity Benchmark},
  author = {Hoelscher-Obermaier, Jason and Persson, Julia and Kran, Esben and Konstas, Ioannis and Barez, Fazl},
  booktitle = {Findings of the Association for Computational Linguistics: ACL 2023},
  pages = {11548--11559},
  year = {2023}
}""",
    "cohen2024evaluating": """@article{cohen2024evaluating,
  title = {Evaluating the Ripple Effects of Knowledge Editing in Language Models},
  author = {Cohen, Roi and Biran, Eden and Yoran, Ori and Globerson, Amir and Geva, Mor},
  journal = {Transactions of the Association for Computational Linguistics},
  volume = {12},
  pages = {283--298},
  year = {2024}
}""",
    "hase2023does": """@inproceedings{hase2023does,
  title = {Does Localization Inform Editing? Surprising Differences in Causality-Based Localization vs. Knowledge Editing in Language Models},
  author = {Hase, Peter and Bansal, Mohit and Kim, Been and Ghandeharioun, Asma},
  booktitle = {Advances in Neural Information Processing Systems},
  volume = {36},
  year = {2023}
}""",
    "li2024unveiling": """@inproceedings{li2024unveiling,
  title = {Unveiling the Pitfalls of Knowledge Editing for Large Language Models},
  author = {Li, Zhoubo and Zhang, Ningyu and Yao, Yunzhi and Wang, Mengru and Chen, Xi and Chen, Huajun},
  booktitle = {International Conference on Learning Representations},
  year = {2024}
}""",
    # ---- datasets
    "levy2017zero": """@inproceedings{levy2017zero,
  title = {Zero-Shot Relation Extraction via Reading Comprehension},
  author = {Levy, Omer and Seo, Minjoon and Choi, Eunsol and Zettlemoyer, Luke},
  booktitle = {Proceedings of the 21st Conference on Computational Natural Language Learning},
  pages = {333--342},
  year = {2017}
}""",
    "zhong2023mquake": """@inproceedings{zhong2023mquake,
  title = {{MQuAKE}: Assessing Knowledge Editing in Language Models via Multi-Hop Questions},
  author = {Zhong, Zexuan and Wu, Zhengxuan and Manning, Christopher D. and Potts, Christopher and Chen, Danqi},
  booktitle = {Proceedings of the 2023 Conference on Empirical Methods in Natural Language Processing},
  pages = {15686--15702},
  year = {2023}
}""",
    "merity2017pointer": """@inproceedings{merity2017pointer,
  title = {Pointer Sentinel Mixture Models},
  author = {Merity, Stephen and Xiong, Caiming and Bradbury, James and Socher, Richard},
  booktitle = {International Conference on Learning Representations},
  year = {2017}
}""",
    "bisk2020piqa": """@inproceedings{bisk2020piqa,
  title = {{PIQA}: Reasoning about Physical Commonsense in Natural Language},
  author = {Bisk, Yonatan and Zellers, Rowan and Le Bras, Ronan and Gao, Jianfeng and Choi, Yejin},
  booktitle = {Proceedings of the AAAI Conference on Artificial Intelligence},
  volume = {34},
  pages = {7432--7439},
  year = {2020}
}""",
    "zellers2019hellaswag": """@inproceedings{zellers2019hellaswag,
  title = {{HellaSwag}: Can a Machine Really Finish Your Sentence?},
  author = {Zellers, Rowan and Holtzman, Ari and Bisk, Yonatan and Farhadi, Ali and Choi, Yejin},
  booktitle = {Proceedings of the 57th Annual Meeting of the Association for Computational Linguistics},
  pages = {4791--4800},
  year = {2019}
}""",
    "paperno2016lambada": """@inproceedings{paperno2016lambada,
  title = {The {LAMBADA} Dataset: Word Prediction Requiring a Broad Discourse Context},
  author = {Paperno, Denis and Kruszewski, Germ{\\'a}n and Lazaridou, Angeliki and Pham, Ngoc Quan and Bernardi, Raffaella and Pezzelle, Sandro and Baroni, Marco and Boleda, Gemma and Fern{\\'a}ndez, Raquel},
  booktitle = {Proceedings of the 54th Annual Meeting of the Association for Computational Linguistics},
  pages = {1525--1534},
  year = {2016}
}""",
    "socher2013recursive": """@inproceedings{socher2013recursive,
  title = {Recursive Deep Models for Semantic Compositionality Over a Sentiment Treebank},
  author = {Socher, Richard and Perelygin, Alex and Wu, Jean and Chuang, Jason and Manning, Christopher D. and Ng, Andrew and Potts, Christopher},
  booktitle = {Proceedings of the 2013 Conference on Empirical Methods in Natural Language Processing},
  pages = {1631--1642},
  year = {2013}
}""",
    "wang2019glue": """@inproceedings{wang2019glue,
  title = {{GLUE}: A Multi-Task Benchmark and Analysis Platform for Natural Language Understanding},
  author = {Wang, Alex and Singh, Amanpreet and Michael, Julian and Hill, Felix and Levy, Omer and Bowman, Samuel R.},
  booktitle = {International Conference on Learning Representations},
  year = {2019}
}""",
    # ---- models
    "radford2019language": """@techreport{radford2019language,
  title = {Language Models are Unsupervised Multitask Learners},
  author = {Radford, Alec and Wu, Jeffrey and Child, Rewon and Luan, David and Amodei, Dario and Sutskever, Ilya},
  institution = {OpenAI},
  year = {2019}
}""",
    "allal2025smollm2": """@article{allal2025smollm2,
  title = {{SmolLM2}: When Smol Goes Big -- Data-Centric Training of a Small Language Model},
  author = {Ben Allal, Loubna and Lozhkov, Anton and Bakouch, Elie and Mart{\\'i}n Bl{\\'a}zquez, Gabriel and Penedo, Guilherme and Tunstall, Lewis and Marafioti, Andr{\\'e}s and others},
  journal = {arXiv preprint arXiv:2502.02737},
  year = {2025}
}""",
    "gemma2025gemma3": """@article{gemma2025gemma3,
  title = {Gemma 3 Technical Report},
  author = {{Gemma Team}},
  journal = {arXiv preprint arXiv:2503.19786},
  year = {2025}
}""",
    # ---- tools
    "paszke2019pytorch": """@inproceedings{paszke2019pytorch,
  title = {{PyTorch}: An Imperative Style, High-Performance Deep Learning Library},
  author = {Paszke, Adam and Gross, Sam and Massa, Francisco and Lerer, Adam and Bradbury, James and Chanan, Gregory and Killeen, Trevor and Lin, Zeming and Gimelshein, Natalia and Antiga, Luca and others},
  booktitle = {Advances in Neural Information Processing Systems},
  volume = {32},
  year = {2019}
}""",
    "wolf2020transformers": """@inproceedings{wolf2020transformers,
  title = {Transformers: State-of-the-Art Natural Language Processing},
  author = {Wolf, Thomas and Debut, Lysandre and Sanh, Victor and Chaumond, Julien and Delangue, Clement and Moi, Anthony and Cistac, Pierric and Rault, Tim and Louf, R{\\'e}mi and Funtowicz, Morgan and others},
  booktitle = {Proceedings of the 2020 Conference on Empirical Methods in Natural Language Processing: System Demonstrations},
  pages = {38--45},
  year = {2020}
}""",
    "mangrulkar2022peft": """@misc{mangrulkar2022peft,
  title = {{PEFT}: State-of-the-art Parameter-Efficient Fine-Tuning methods},
  author = {Mangrulkar, Sourab and Gugger, Sylvain and Debut, Lysandre and Belkada, Younes and Paul, Sayak and Bossan, Benjamin},
  howpublished = {\\url{https://github.com/huggingface/peft}},
  year = {2022}
}""",
    "gao2023harness": """@misc{gao2023harness,
  title = {A framework for few-shot language model evaluation},
  author = {Gao, Leo and Tow, Jonathan and Abbasi, Baber and Biderman, Stella and Black, Sid and DiPofi, Anthony and Foster, Charles and Golding, Laurence and Hsu, Jeffrey and others},
  howpublished = {Zenodo},
  doi = {10.5281/zenodo.10256836},
  year = {2023}
}""",
    "wang2024easyedit": """@inproceedings{wang2024easyedit,
  title = {{EasyEdit}: An Easy-to-use Knowledge Editing Framework for Large Language Models},
  author = {Wang, Peng and Zhang, Ningyu and Tian, Bozhong and Xi, Zekun and Yao, Yunzhi and Xu, Ziwen and Wang, Mengru and Mao, Shengyu and Wang, Xiaohan and Cheng, Siyuan and others},
  booktitle = {Proceedings of the 62nd Annual Meeting of the Association for Computational Linguistics (System Demonstrations)},
  pages = {82--93},
  year = {2024}
}""",
    # ---- statistics
    "wilson1927probable": """@article{wilson1927probable,
  title = {Probable Inference, the Law of Succession, and Statistical Inference},
  author = {Wilson, Edwin B.},
  journal = {Journal of the American Statistical Association},
  volume = {22},
  number = {158},
  pages = {209--212},
  year = {1927}
}""",
    "clopper1934use": """@article{clopper1934use,
  title = {The Use of Confidence or Fiducial Limits Illustrated in the Case of the Binomial},
  author = {Clopper, C. J. and Pearson, E. S.},
  journal = {Biometrika},
  volume = {26},
  number = {4},
  pages = {404--413},
  year = {1934}
}""",
    "mcnemar1947note": """@article{mcnemar1947note,
  title = {Note on the Sampling Error of the Difference Between Correlated Proportions or Percentages},
  author = {McNemar, Quinn},
  journal = {Psychometrika},
  volume = {12},
  number = {2},
  pages = {153--157},
  year = {1947}
}""",
    "schuirmann1987tost": """@article{schuirmann1987tost,
  title = {A Comparison of the Two One-Sided Tests Procedure and the Power Approach for Assessing the Equivalence of Average Bioavailability},
  author = {Schuirmann, Donald J.},
  journal = {Journal of Pharmacokinetics and Biopharmaceutics},
  volume = {15},
  number = {6},
  pages = {657--680},
  year = {1987}
}""",
    "holm1979simple": """@article{holm1979simple,
  title = {A Simple Sequentially Rejective Multiple Test Procedure},
  author = {Holm, Sture},
  journal = {Scandinavian Journal of Statistics},
  volume = {6},
  number = {2},
  pages = {65--70},
  year = {1979}
}""",
    "efron1993introduction": """@book{efron1993introduction,
  title = {An Introduction to the Bootstrap},
  author = {Efron, Bradley and Tibshirani, Robert J.},
  publisher = {Chapman and Hall},
  year = {1993}
}""",
}

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


def bibliography(keys: list[str], extra: str = "") -> str:
    """references.bib: the entries of ``keys`` (known here or in ``extra``, a user's BibTeX), each once."""
    own = set(bib_keys(extra))
    out = [ENTRIES[k] for k in dict.fromkeys(keys) if k in ENTRIES and k not in own]
    return "\n\n".join([*out, extra.strip()]).strip() + "\n"


__all__ = ["ENTRIES", "bib_keys", "bibliography", "cited_keys", "study_keys"]
