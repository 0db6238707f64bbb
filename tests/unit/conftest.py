"""Fixtures shared by the unit tests."""

import json

import pytest


@pytest.fixture
def tmp_cache(tmp_path, monkeypatch):
    """A fresh, empty editscope cache for one test (covariance statistics, base outputs, models)."""
    monkeypatch.setenv("EDITSCOPE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def pool(tmp_path):
    """A small CounterFact-form demonstration pool (the IKE tests do not need the shared 10k records)."""
    recs = [{"case_id": i, "prompt": f"{a}+{b}=", "target_new": str(a + b + 1), "subject": f"{a}+{b}",
             "ground_truth": str(a + b), "rephrase_prompt": f"What is {a}+{b}? It is",
             "locality_prompt": f"{b}+{b}=", "locality_ground_truth": str(2 * b)}
            for i, (a, b) in enumerate([(1, 1), (3, 4), (5, 2), (6, 1), (2, 2)])]
    path = tmp_path / "pool.json"
    path.write_text(json.dumps(recs))
    return str(path)
