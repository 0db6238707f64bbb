import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

if os.environ.get("PYTEST_XDIST_WORKER"):  # `make test` runs -n 2: the workers share the cores, not oversubscribe them
    import torch

    torch.set_num_threads(max(1, (os.cpu_count() or 2) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))))


@pytest.fixture(scope="session")
def default_model():
    """The real default model (smollm2-135m, fp32), loaded once per test session."""
    import editscope as es

    return es.load_model("smollm2-135m")


@pytest.fixture(scope="session")
def gemma_model():
    """The second built-in model (gemma3-270m, fp32), loaded once per test session."""
    import editscope as es

    return es.load_model("gemma3-270m")
