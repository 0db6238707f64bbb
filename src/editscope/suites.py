"""The public suite namespace, ``es.suites``: ``probes = es.suites.arithmetic(req)``."""

from .probes.arithmetic import arithmetic
from .probes.facts import facts
from .probes.registry import get_suite, list_suites, register_suite

__all__ = ["arithmetic", "facts", "get_suite", "list_suites", "register_suite"]
