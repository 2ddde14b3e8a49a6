# make setup: virtualenv, dependencies, queues.  make test: the test suite.
# make serve / make worker: the writer / the worker in the foreground.  make clean.
# Every target creates the virtualenv first when it is missing or requirements.txt changed.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: setup venv queues test serve worker clean requirements

setup: queues

venv: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e . || $(PY) -m pip install --quiet --no-deps -e .
	touch $@

queues: $(STAMP)
	$(PY) sqs_setup.py

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

serve: $(STAMP)
	$(PY) server.py

worker: $(STAMP)
	$(PY) worker.py $(WORKER_ARGS)

# Re-pin every package after changing the direct dependencies listed in requirements.txt.
requirements:
	rm -rf .venv-pin && $(PYTHON) -m venv .venv-pin
	.venv-pin/bin/pip install --quiet 'connexion[flask,uvicorn,swagger-ui]' boto3 requests moto flask-cors pytest httpx2
	{ sed -n '/^#/p' requirements.txt; .venv-pin/bin/pip freeze; } > requirements.txt.new
	mv requirements.txt.new requirements.txt && rm -rf .venv-pin

clean:
	rm -rf $(VENV) .pytest_cache *.egg-info build dist
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
