# Two set-up commands: `make demo` and `make test`. Both create .venv when missing.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
# SPARK=1: also the optional Spark extra (pyspark; Java 17+ needed at run time). .ci/run sets it.
SPARK  ?= 0
comma  := ,
EXTRAS := $(if $(filter 1,$(SPARK)),dev$(comma)spark,dev)

.PHONY: venv demo lint test test-fast bench clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[$(EXTRAS)]'
	@touch $(STAMP)

venv: $(STAMP)

DEMO_USER     := demo
DEMO_PASSWORD := demo-password-1

demo: $(STAMP)
	$(BIN)/mktg demo
	@$(BIN)/mktg users add $(DEMO_USER) --roles ops,crm,analyst,admin --password $(DEMO_PASSWORD) 2>/dev/null || true
	@echo "console: start it with '$(BIN)/mktg serve', open http://127.0.0.1:8000/ and log in as $(DEMO_USER) / $(DEMO_PASSWORD)"

# Enforced on every `make test` (and so in CI): lint and format, the layering contract, types.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest -n 2 -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -n 2 -q -m "not slow"

clean:
	rm -rf var .pytest_cache .hypothesis
