"""The process's peak resident memory over a stretch of work (Linux): the high-water mark ``VmHWM``
is reset by writing ``5`` to ``/proc/self/clear_refs`` and read back from ``/proc/self/status``.
Elsewhere (or where the reset is not allowed) :func:`peak_rss_mb` returns None; nothing fails."""

from __future__ import annotations

from pathlib import Path

_STATUS, _CLEAR = Path("/proc/self/status"), Path("/proc/self/clear_refs")


def reset_peak() -> bool:
    """Start a new peak measurement; False where the kernel does not allow it."""
    try:
        _CLEAR.write_text("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float | None:
    """Peak resident set size since the last :func:`reset_peak` (or the process start), MiB."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except (OSError, ValueError, IndexError):
        return None
    return None


__all__ = ["peak_rss_mb", "reset_peak"]
