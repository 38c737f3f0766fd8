# kv, the HTTP key-value service.
#   docker build -t kv .
#   docker run --rm -p 8000:8000 kv                          # memory backend
#   docker run --rm -p 8000:8000 -e KV_BACKEND=redis -e KV_REDIS_URL=redis://host:6379/0 kv
# compose.yaml runs it next to Tarantool or Redis.
#
# Two stages: `build` installs the hash-pinned dependencies and the package into a venv;
# `runtime` receives only that venv (no pip cache, no sources, no build tools).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# The lock on its own first, so this layer is rebuilt only when the dependencies change.
COPY requirements.lock ./
# --require-hashes: every file must match the lock. --only-binary: the slim image has no
# compiler, and every pinned package ships a wheel for CPython 3.11 on glibc.
RUN pip install --require-hashes --only-binary=:all: -r requirements.lock
COPY pyproject.toml README.md ./
COPY src ./src
# The lock also pins setuptools and wheel, so the package builds with them: no deps, no index.
RUN pip install --no-deps --no-build-isolation --no-index .

FROM ${PYTHON_IMAGE} AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN groupadd --system --gid 10001 kv \
    && useradd --system --uid 10001 --gid kv --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin kv
# Same base image and same path as in `build`, so the venv's interpreter links still resolve.
COPY --from=build /opt/venv /opt/venv
# Numeric, so that orchestrators can verify "non-root" without reading /etc/passwd.
USER 10001:10001
EXPOSE 8000
# /ready answers 200 only when the backend answers a ping. urllib, not curl: the slim image
# has no curl. The port follows KV_PORT, like `kv serve`.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/ready' % os.environ.get('KV_PORT', '8000'), timeout=2)"]
# Listen on every interface of the container; KV_* variables configure the rest.
CMD ["kv", "serve", "--host", "0.0.0.0"]
