"""Experiments: study configs, protocols (single, batch, sequential) with a collapse guard, and the
resumable SQLite results store. See :func:`run_study` and ``editscope run``."""

from .config import ConfigError, StudyConfig, load_config, parse_config
from .execute import RunFolderError, run_study
from .prepare import load_study_model
from .plan import Plan, build_plan
from .store import ResultsStore, StoreError, export_archive, unpack_archive

__all__ = ["ConfigError", "Plan", "ResultsStore", "RunFolderError", "StoreError", "StudyConfig", "build_plan",
           "export_archive", "load_config", "load_study_model", "parse_config", "run_study", "unpack_archive"]
