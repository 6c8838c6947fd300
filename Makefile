# Two commands on a fresh machine:  `make demo`  and  `make test`  (each sets up .venv first).
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: setup demo test clean

$(STAMP): pyproject.toml scripts/ensure-system-deps.sh
	bash scripts/ensure-system-deps.sh setup
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -e '.[test]'
	$(VENV)/bin/pip install --quiet --disable-pip-version-check --no-deps clip-benchmark==1.6.2
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/curate demo --workdir demo_out

test: $(STAMP)
	bash scripts/ensure-system-deps.sh test
	$(VENV)/bin/python -m pytest -q

clean:
	rm -rf demo_out .pytest_cache
