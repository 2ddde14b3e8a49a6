# One image for every part of the service; the command picks the part:
#   queue-writer (the default), queue-worker, queue-client, queue-setup, queue-dlq.
# Build: docker build -t sqs-message-service .   Run the whole system: docker compose up
# Every setting comes from the environment (docs/configuration.md).

ARG PYTHON_VERSION=3.11
# Any Debian-based image with that Python, pip and venv (make containers builds a stand-in for it
# from Debian's packages where no registry can be reached).
ARG BASE_IMAGE=python:${PYTHON_VERSION}-slim

# Stage 1: wheels of the service and of every dependency, at the versions tested together
# (requirements.txt). Every dependency publishes wheels, so nothing is compiled here either.
FROM ${BASE_IMAGE} AS wheels
WORKDIR /src
COPY requirements.txt pyproject.toml README.md swagger.yml log.conf *.py ./
# The package; its swagger.yml and log.conf link to the two files above, and the wheel holds them.
COPY sqs_message_service ./sqs_message_service
# Behind a TLS-intercepting proxy, give its CA as a build secret, used for this step only:
#   docker build --secret id=extra_ca,src=corp-ca.pem .   (podman build takes the same option)
RUN --mount=type=secret,id=extra_ca \
    if [ -s /run/secrets/extra_ca ]; then \
      cat "$(python -c 'import pip._vendor.certifi as c; print(c.where())')" /run/secrets/extra_ca > /tmp/ca.pem; \
      export PIP_CERT=/tmp/ca.pem; \
    fi; \
    pip wheel --no-cache-dir --wheel-dir /wheels --constraint requirements.txt .

# Stage 2: the runtime. It installs those wheels from disk and nothing else: no compiler, no
# build backend, no source tree; it runs as an unprivileged user.
FROM ${BASE_IMAGE}
LABEL org.opencontainers.image.title="sqs-message-service" \
      org.opencontainers.image.description="An OpenAPI-first REST service and a worker that talk through an Amazon SQS queue" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.version="0.1.0"
RUN --mount=type=bind,from=wheels,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links /wheels sqs-message-service \
    && groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin app
USER 10001:10001
# In a container the writer and the worker's metrics listen on every interface: the published
# ports decide who reaches them.
ENV HOST=0.0.0.0 \
    PORT=5000 \
    METRICS_PORT=9102 \
    PYTHONUNBUFFERED=1
EXPOSE 5000 9102
# Liveness of the writer, the default command (no SQS call: an SQS outage restarts nothing).
# The worker's service overrides it with its metrics port (docker-compose.yml).
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(f\"http://127.0.0.1:{os.environ['PORT']}/api/health\", timeout=2)"]
CMD ["queue-writer"]
