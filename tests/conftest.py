import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


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
