"""Probe suites: the arithmetic grid, written facts, the published "2+2=5" study's 38 probes
(``seed38``), and (in :mod:`editscope.probes.datasets`) the edit-dataset parsers.

All suites are reachable by name through :func:`get_suite` / :func:`list_suites`; new ones are
added with :func:`register_suite`.
"""

from .arithmetic import arithmetic, number_words, parse_arithmetic
from .facts import facts
from .registry import SUITES, SuiteInfo, UnknownSuiteError, get_suite, list_suites, register_suite

# the edit-dataset parsers register their datasets and suites: after the registry
from .datasets import (EditCase, EditDataset, LoadReport, load_counterfact, load_jsonl, load_knowedit, load_mquake,
                       load_zsre)

# registers the "seed38" suite; must follow the registry. The module (not its factory function) is
# exported, so that editscope.probes.seed38.COUNTS / PUBLISHED / PUBLISHED_SETTINGS stay reachable.
from . import seed38  # noqa: E402,F401

__all__ = [
    "EditCase", "EditDataset", "LoadReport", "load_counterfact", "load_jsonl", "load_knowedit", "load_mquake",
    "load_zsre",
    "SUITES", "SuiteInfo", "UnknownSuiteError", "arithmetic", "facts", "get_suite", "list_suites",
    "number_words", "parse_arithmetic", "register_suite",
]
