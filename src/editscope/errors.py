"""The errors editscope raises on purpose, and how any error becomes one clear line on the CLI.

Every deliberate error derives from :class:`EditscopeError`; its message names the culprit (a file,
a flag, a study key, a record) and the fix. :attr:`EditscopeError.exit_code` says whose move it is:
2 for bad input (:class:`InputError`: the call can be fixed), 1 for a failure during work
(:class:`WorkError`), 3 for evaluation data that is missing, unreachable or not the registry's
(:class:`editscope.data.fetch.DataError`). The concrete classes keep their historical builtin bases too (a
``ConfigError`` is still a ``ValueError``), so ``except ValueError`` in user code keeps working.
"""

from __future__ import annotations

import errno

#: exit codes of the ``editscope`` command
EXIT_INPUT = 2
EXIT_FAILURE = 1
#: evaluation data missing, unreachable or not the registry's (editscope.data)
EXIT_DATA = 3
EXIT_INTERRUPTED = 130


class EditscopeError(Exception):
    """An error editscope raised on purpose; the message says what is wrong and how to fix it."""

    exit_code: int = EXIT_FAILURE


class InputError(EditscopeError):
    """Bad input: a name, a value, a file or a folder that the user can fix (exit code 2)."""

    exit_code = EXIT_INPUT


class WorkError(EditscopeError):
    """A failure while working on valid input (exit code 1)."""

    exit_code = EXIT_FAILURE


class CorruptFileError(InputError, ValueError):
    """A file that exists but cannot be read as what it claims to be (truncated safetensors, a
    GGUF, xz archive, JSON or YAML file that does not parse); the message names the file."""


class CacheDirError(InputError, OSError):
    """``EDITSCOPE_CACHE`` (or the default cache folder) cannot be used: not a folder, not writable."""


def describe(exc: BaseException) -> tuple[int, str]:
    """``(exit code, one-line message)`` for any exception reaching the CLI: editscope's own
    errors as they are, the usual Python/OS errors turned into a sentence that names the file,
    and anything else marked as unexpected (rerun with ``--debug`` for the traceback)."""
    if isinstance(exc, KeyError) and len(exc.args) == 1:  # str(KeyError) would quote the message
        return getattr(exc, "exit_code", EXIT_INPUT), str(exc.args[0])
    if isinstance(exc, EditscopeError):
        return exc.exit_code, str(exc)
    if isinstance(exc, UnicodeDecodeError):
        return EXIT_INPUT, f"not valid UTF-8 text ({exc.reason} at byte {exc.start}); give the text as UTF-8"
    if isinstance(exc, OSError):
        where = f": {exc.filename}" if exc.filename else ""
        text = exc.strerror or str(exc) or type(exc).__name__
        if isinstance(exc, (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError,
                            FileExistsError)) or exc.errno in (errno.EROFS, errno.ENAMETOOLONG):
            return EXIT_INPUT, f"{text}{where}"
        if exc.errno == errno.ENOSPC:
            return EXIT_FAILURE, f"no space left on the device{where}; free some space and rerun (--resume for a run)"
        return EXIT_FAILURE, f"{text}{where}"
    if isinstance(exc, (ValueError, TypeError)):
        return EXIT_INPUT, str(exc)
    if isinstance(exc, MemoryError):
        return EXIT_FAILURE, "out of memory; use a smaller batch, a smaller probe set or a machine with more memory"
    return EXIT_FAILURE, (f"unexpected {type(exc).__name__}: {exc} (a bug in editscope: rerun with --debug for the "
                          "traceback and report it)")


__all__ = ["EXIT_DATA", "EXIT_FAILURE", "EXIT_INPUT", "EXIT_INTERRUPTED", "CacheDirError", "CorruptFileError",
           "EditscopeError", "InputError", "WorkError", "describe"]
