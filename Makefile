# make run: the whole system in tmux on a local SQS endpoint (AWS=1: real SQS).  make stop.
# make test: lint, types and the test suite (make fast: lint and the tests that start no process).  make e2e: a headless end-to-end check that nothing is lost.
# make soak: steady load, flat memory and depth.  make bench: throughput and cost, as ratios.
# make profile: where the writer's CPU goes, by part of the stack.
# make containers: build the image and run docker-compose.yml for real, with its checks.
# make deploy-check: lint deploy/aws and deploy/kubernetes, and deploy the stack on moto.
# make audit: known vulnerabilities in the pins.
# make setup: virtualenv, dependencies, queues.  make serve / make worker / make console: one part
# in the foreground.  make clean.
# Every target creates the virtualenv first when it is missing or requirements.txt changed.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

LOCAL_SQS := local/sqs/node_modules/.installed

.PHONY: setup venv local-sqs browser prometheus queues run stop test fast lint format e2e containers soak bench profile audit serve worker console clean requirements

setup: queues

venv: $(STAMP)

# The editable install builds with setuptools>=77 from PyPI (PEP 639 license). Its notice that
# such an install finds top-level modules through a path finder is information, not an action.
$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	PYTHONWARNINGS="ignore:Editable installation" $(PY) -m pip install --quiet --no-deps -e .
	touch $@

# fauxqs, the local SQS engine, when Node.js is there; without it, make run uses moto_server.
local-sqs: $(LOCAL_SQS)

$(LOCAL_SQS): local/sqs/package-lock.json
	@if ! command -v npm >/dev/null 2>&1; then \
	  echo "Node.js not found: the local SQS endpoint will be moto_server (slower as queues grow)"; \
	elif (cd local/sqs && npm ci --no-audit --no-fund --loglevel=error); then \
	  touch $@; \
	else \
	  echo "npm ci failed: the local SQS endpoint will be moto_server (slower as queues grow)"; \
	fi

queues: $(STAMP)
	$(PY) sqs_setup.py

run: $(STAMP) local-sqs
	./runall.sh $(RUN_ARGS)

stop:
	./runall.sh stop

# Debian's headless Chromium and its driver, for the console's browser tests (Selenium drives
# them): installed with apt-get when missing and this is root; otherwise it says how, and stops.
browser:
	@if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing chromium and chromium-driver (Debian's) for the console's browser tests"; \
	  apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null; \
	else \
	  echo "the console's browser tests need Chromium: sudo apt-get install chromium chromium-driver" >&2; exit 1; \
	fi

# A real Prometheus for the console's PROMETHEUS_URL test: Debian's package, downloaded and
# unpacked here (no installation, no service, no user), used only on 127.0.0.1.
PROMETHEUS := .cache/prometheus/usr/bin/prometheus
prometheus: $(PROMETHEUS)

$(PROMETHEUS):
	mkdir -p .cache/prometheus
	cd .cache && { apt-get download prometheus >/dev/null 2>&1 || { apt-get update -qq && apt-get download prometheus; }; }
	dpkg-deb -x .cache/prometheus_*.deb .cache/prometheus && rm -f .cache/prometheus_*.deb
	touch $@

# Lint, format and types first (seconds), then every test (pytest-xdist): each test uses its own
# ports, files and processes. Two test processes a core, because a process test mostly waits on
# the processes it started; an idle one takes over half of a busy one's queue (worksteal), so a
# few long tests do not end the run on one core. `make fast` is the quick tier alone.
XDIST := -n $$(( 2 * $$(nproc) )) --dist worksteal

test: $(STAMP) local-sqs browser prometheus lint
	$(PY) -m pytest $(XDIST) $(PYTEST_ARGS)

# The quick tier, as make test runs it (many of its tests wait on a clock or a thread more than
# they compute): its tests share no process, file or fixed port. The lint runs beside them on
# the core they leave idle; its output follows theirs, and either failing fails make fast.
fast: $(STAMP)
	@$(MAKE) --no-print-directory lint > .lint.out 2>&1 & linting=$$!; \
	$(PY) -m pytest -m "not integration" --ignore=tests/process $(XDIST) $(PYTEST_ARGS); tests=$$?; \
	wait $$linting; linted=$$?; cat .lint.out; rm -f .lint.out; \
	[ $$linted -eq 0 ] || echo "make fast: the lint failed (above)" >&2; \
	[ $$tests -eq 0 ] && [ $$linted -eq 0 ]

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

# ruff's formatter over everything (make lint checks that nothing is left to format).
format: $(STAMP)
	$(VENV)/bin/ruff format .

e2e: $(STAMP) local-sqs
	$(PY) scripts/e2e.py $(E2E_ARGS)

# The image from the Dockerfile and the whole compose file, run and checked (docs/deployment.md):
# Docker where it has an engine and a registry, else podman with a base bootstrapped from Debian.
containers: $(STAMP)
	$(PY) scripts/containers.py $(CONTAINERS_ARGS)

# deploy/: cfn-lint and kubernetes-validate over the files, and the stack deployed on moto's
# server with the end-to-end check against it (docs/deployment.md#on-aws). Also in make test.
.PHONY: deploy-check
deploy-check: $(STAMP)
	$(PY) -m pytest tests/test_deploy_aws.py tests/test_deploy_kubernetes.py $(PYTEST_ARGS)

# Two minutes at half the measured capacity: writer and worker memory and queue depth stay flat.
soak: $(STAMP) local-sqs
	$(PY) bench/soak.py $(SOAK_ARGS)

# Under 5 minutes: write path real/stub, SQS calls per message, batch endpoint, worker scaling,
# overload (clients that retry at once, at 8 times the best throughput's connections),
# end to end. Prints a table with the targets; every figure goes to bench/results.json.
bench: $(STAMP) local-sqs
	$(PY) bench/bench.py $(BENCH_ARGS)

# Where the writer's CPU goes on POST /api/message, by part of the stack, sampled with py-spy
# (installed into the virtualenv on first use) at saturation on the local endpoint.
profile: $(STAMP) local-sqs
	test -x $(VENV)/bin/py-spy || $(PY) -m pip install --quiet py-spy==0.4.3
	$(PY) bench/cpu_profile.py $(PROFILE_ARGS)

# Known vulnerabilities in the pinned requirements: pip-audit, in a virtualenv of its own so that
# its dependencies stay out of the service's. Needs a vulnerability service (PyPI's or OSV).
AUDIT_VENV := .venv-audit
audit:
	test -x $(AUDIT_VENV)/bin/pip-audit || { $(PYTHON) -m venv $(AUDIT_VENV) && $(AUDIT_VENV)/bin/pip install --quiet pip-audit==2.10.1; }
	$(AUDIT_VENV)/bin/pip-audit --strict --no-deps --disable-pip --requirement requirements.txt

serve: $(STAMP)
	$(PY) server.py

console: $(STAMP)
	$(PY) -m sqs_message_service.console

worker: $(STAMP)
	$(PY) worker.py $(WORKER_ARGS)

# Re-pin every package after changing the direct dependencies listed in requirements.txt.
requirements:
	rm -rf .venv-pin && $(PYTHON) -m venv .venv-pin
	.venv-pin/bin/pip install --quiet 'connexion[flask,uvicorn,swagger-ui]' boto3 prometheus-client jsonschema-rs opentelemetry-api opentelemetry-sdk opentelemetry-exporter-otlp-proto-http moto flask-cors pytest pytest-xdist httpx2 schemathesis requests build selenium openapi-python-client==0.29.1 ruff mypy 'moto[cloudformation]' cfn-lint kubernetes-validate
	{ sed -n '/^#/p' requirements.txt; .venv-pin/bin/pip freeze | grep -v '^#'; } > requirements.txt.new
	mv requirements.txt.new requirements.txt && rm -rf .venv-pin

# Also what `make containers` left: its podman storage and base, and Debian packages it installed.
clean:
	$(PYTHON) scripts/containers.py clean
	rm -rf $(VENV) $(AUDIT_VENV) .pytest_cache *.egg-info build dist local/sqs/node_modules .e2e .soak .bench .cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
