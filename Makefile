# The two commands of the README: `make run` and `make test`.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
CONFIG ?= config/gateway.yaml

.PHONY: run test bench check-config clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# The compat editable mode keeps twisted/plugins/ visible to twistd (the strict mode hides it).
$(VENV)/.installed: setup.py $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]' --config-settings editable_mode=compat
	touch $@

run: $(VENV)/.installed
	mkdir -p var
	$(BIN)/twistd -n siaga --config $(CONFIG)

check-config: $(VENV)/.installed
	$(BIN)/siaga check-config $(CONFIG)

test: $(VENV)/.installed
	$(BIN)/python -m pytest -q tests

clean:
	rm -rf $(VENV) var build *.egg-info twisted/plugins/dropin.cache

# End-to-end benchmark: `make bench` (a few minutes; updates BENCHMARKS.md and bench/results/latest.json),
# `make bench QUICK=1` (seconds; checks that it runs), `make bench PROFILE=1` (adds a py-spy profile),
# `make bench REV=HEAD` (the daemon runs that git revision instead of the working tree).
.PHONY: bench
bench: $(VENV)/.installed
	$(if $(PROFILE),test -x $(BIN)/py-spy || $(BIN)/pip install --quiet py-spy)
	$(BIN)/python bench/run.py $(if $(QUICK),--quick) $(if $(PROFILE),--profile 10) $(if $(REV),--rev $(REV))
