"""Fixtures shared by the unit tests."""

import pytest


@pytest.fixture
def tmp_cache(tmp_path, monkeypatch):
    """A fresh, empty editscope cache for one test (covariance statistics, base outputs, models)."""
    monkeypatch.setenv("EDITSCOPE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"
