"""What every backend does before it runs units: load the study's model, compute the key
statistics of the methods still to run, and build a :class:`~editscope.runner.units.Runner`."""

from __future__ import annotations

import logging

from ..covariance import prefetch_key_statistics
from ..methods.base import get_method
from ..models.model import Model, load_model
from ..models.tiny import tiny_model
from ..progress import working
from .config import MethodSpec, StudyConfig
from .plan import Plan
from .unit_results import Stored
from .units import Runner, shared_first_block

log = logging.getLogger(__name__)


def model_by_name(name: str, *, dtype: str = "float32", device: str | None = None, revision: str | None = None,
                  trust_remote_code: bool = False, seed: int = 0) -> Model:
    """A model as a study names it: a name/path/hub id (:func:`editscope.load_model`) or
    ``tiny:<type>`` (a random tiny model of 4 blocks drawn with ``seed``, for tests and examples
    that must run in seconds)."""
    if name.startswith("tiny:"):
        return tiny_model(name.split(":", 1)[1], seed=seed, num_hidden_layers=4)
    return load_model(name, dtype=dtype, device=device, revision=revision, trust_remote_code=trust_remote_code)


def load_study_model(config: StudyConfig) -> Model:
    """The config's model (:func:`model_by_name`, tiny models drawn with the study's seed)."""
    spec = config.model
    return model_by_name(spec.name, dtype=spec.dtype, device=spec.device, revision=spec.revision,
                         trust_remote_code=spec.trust_remote_code, seed=config.seed)


def pending_methods(plan: Plan, stored: Stored) -> list[MethodSpec]:
    """The methods with a unit not yet stored."""
    return [m for m in plan.methods if any((m.name, u.unit) not in stored.done for u in plan.units_of(m.name))]


def study_runner(plan: Plan, stored: Stored, model: Model, *, progress: bool = False,
                 methods: list[MethodSpec] | None = None) -> Runner:
    """A :class:`Runner` for ``plan`` on ``model``, with the key statistics of every method still
    to run (or of ``methods``) computed (or read from the cache) first. Every backend builds its
    runners here."""
    pending = pending_methods(plan, stored) if methods is None else methods
    with working("key statistics for the locate-then-edit methods (cached after the first run)", progress):
        prefetch_statistics(model, pending, plan.config)
    return Runner(plan, model, stored, keep_hidden=shared_first_block(model, pending))


def prefetch_statistics(model: Model, methods: list[MethodSpec], config: StudyConfig | None = None) -> None:
    """Key statistics of every locate-then-edit method still to run, one corpus pass per settings
    (ROME at layer 5 and MEMIT at 1-5 would otherwise each pass over the corpus). Bad
    hyperparameters are left for the method's own unit to report."""
    requests = []
    by_label = {m.name: m for m in (config.method_specs() if config is not None else methods)}
    for spec in methods:
        if spec.match is not None:  # a placebo reads what its matched method reads
            spec = by_label.get(spec.match, spec)
        try:
            m = get_method(spec.method)
            requests.append(m.statistics_request(model, m.resolve_hparams(model.arch, model.n_layers, spec.hparams)))
        except Exception as e:  # noqa: BLE001 - reported by the unit that uses these hyperparameters
            log.debug("no statistics prefetch for %s: %s", spec.name, e)
    prefetch_key_statistics(model, requests)


__all__ = ["load_study_model", "pending_methods", "prefetch_statistics", "study_runner"]
