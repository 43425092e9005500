# Two commands do all the set-up and work (each installs what it needs, idempotently):
#   make demo   - stage 1 on the tiny models (or MODELS=folder-with-manifest.json) -> demo_output/
#   make test   - lint and format check (ruff), then the whole test suite
#   make fmt    - apply ruff's fixes and formatting
PY ?= python3
VENV := .venv
STAMP := $(VENV)/.installed-$(shell cat requirements-dev.txt | md5sum | cut -c1-8)

$(STAMP): requirements-dev.txt
	test -x $(VENV)/bin/python || $(PY) -m venv $(VENV)
	$(VENV)/bin/pip install -q -r requirements-dev.txt
	# taming's package metadata asks for PyTorch Lightning, which the pack never imports
	$(VENV)/bin/pip install -q --no-deps taming-transformers-rom1504==0.0.6
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/python -m tcig_ops demo $(if $(MODELS),--models $(MODELS),) --out-dir demo_output

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

fmt: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

test: lint
	@if command -v node >/dev/null 2>&1; then node --test tests/js/; \
	else echo "JavaScript tests skipped: Node.js 18+ is not installed (they run with: node --test tests/js/)"; fi
	$(VENV)/bin/python -m pytest -q $(PYTEST_ARGS)

.PHONY: venv demo lint fmt test
