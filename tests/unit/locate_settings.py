"""Settings shared by the tests that run the locate-then-edit methods on tiny random models."""

import editscope as es

#: covariance statistics small enough for a unit test
STATS = {"stats_tokens": 600, "stats_corpus": ["me_ppl_50"], "n_contexts": 2, "context_len": 4}
#: tiny random models learn slowly: a generous budget, and no failure threshold for the algebra tests
EASY = {**STATS, "fact_token": "last", "v_lr": 1.0, "v_steps": 15, "v_fail_loss": 100.0, "clamp_norm_factor": 20}
REQ = es.EditRequest("The capital of France is", "Rome", subject="France")
