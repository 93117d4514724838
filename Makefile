# The two commands a user needs: `make demo` (the main job on a local control plane) and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test lint typecheck unit e2e demo dev controlplane bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

controlplane:
	@hack/controlplane/build.sh >/dev/null

unit: $(STAMP)
	$(BIN)/pytest --ignore=tests/e2e

e2e: $(STAMP) controlplane
	$(BIN)/pytest tests/e2e

# Every level: lint, types, core/webhook/controller tests, then end-to-end against a real kube-apiserver.
# pytest exits 5 when it collects nothing; that fails here like any other non-zero status.
test: lint typecheck unit e2e

# The whole product on a local control plane (webhook, controller, Sandbox simulator), narrated, ending
# with SUMMARY lines; exits 0 when every check holds and stops everything it started (also on Ctrl-C).
demo: $(STAMP) controlplane
	$(BIN)/agentgroup demo

# The same environment with the example runtimes, left running until Ctrl-C; prints the KUBECONFIG to use.
dev: $(STAMP) controlplane
	$(BIN)/agentgroup demo --dev

bench: $(STAMP) controlplane
	for b in validate webhook controller; do $(BIN)/python -m bench.$$b || exit 1; done

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
