"""The study explorer and edit playground in the browser (``editscope serve``): stored runs read
through the report's own frame and functions, a probe table filtered on the server, blast-radius
heatmaps, sequential curves, and a queue of playground edits. See :mod:`.app` for the safety rules."""

from .app import create_app
from .catalog import NotARunError, RunCatalog
from .playground import Playground
from .server import DEFAULT_PORT, PortError, check_port, is_loopback, start_in_thread

__all__ = ["DEFAULT_PORT", "NotARunError", "Playground", "PortError", "RunCatalog", "check_port", "create_app",
           "is_loopback", "start_in_thread"]
