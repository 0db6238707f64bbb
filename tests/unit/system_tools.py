"""The system programs some tests drive (Chromium for the HTML report and the explorer, pdflatex for
the LaTeX bundle): found on PATH, skipped locally when missing, a failure in CI (.ci/run installs them)."""

import os
import shutil

import pytest


def chromium() -> str | None:
    """Chromium's (or Chrome's) executable, or None."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


def required_in_ci(tool: str) -> None:
    """Skip a test whose ``tool`` is missing, except in CI, where that is a failure."""
    if os.environ.get("CI"):
        pytest.fail(f"{tool} missing in CI (.ci/run installs it)")
    pytest.skip(f"{tool} not installed")
