# The benchflow engine simulator: an OpenAI-compatible server (vLLM metric names) with no GPU.
# Only what `python -m benchflow.sim` needs is installed (docker/sim-requirements.txt), then
# benchflow itself with --no-deps, so the image is the base plus a small virtualenv.
#
#   docker/build-image.sh sim                     # or: make sim-image [BASE_IMAGE=...]
#   docker run --rm -p 127.0.0.1:8000:8000 benchflow/sim:latest --model sim-model
#
# Works with the classic builder (no BuildKit features). When the build context holds
# docker/wheelhouse/*.whl (docker/build-image.sh --offline), pip installs from it without any index.
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS build
LABEL benchflow.build-stage=sim
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1
RUN python3 -m venv /opt/venv
COPY docker/ /tmp/docker/
RUN set -eu; \
    if ls /tmp/docker/wheelhouse/*.whl >/dev/null 2>&1; then \
      export PIP_NO_INDEX=1 PIP_FIND_LINKS=/tmp/docker/wheelhouse; fi; \
    /opt/venv/bin/pip install -q -r /tmp/docker/sim-requirements.txt
COPY pyproject.toml README.md /src/
COPY benchflow/ /src/benchflow/
COPY sql/ /src/sql/
RUN set -eu; \
    if ls /tmp/docker/wheelhouse/*.whl >/dev/null 2>&1; then \
      export PIP_NO_INDEX=1 PIP_FIND_LINKS=/tmp/docker/wheelhouse; fi; \
    /opt/venv/bin/pip install -q --no-deps /src; \
    /opt/venv/bin/python -c "import benchflow, aiohttp, prometheus_client, pydantic, yaml, numpy"

FROM ${BASE_IMAGE}
LABEL org.opencontainers.image.title="benchflow simulator" \
      org.opencontainers.image.description="OpenAI-compatible LLM-serving engine simulator (benchflow.sim)"
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
COPY --from=build /opt/venv /opt/venv
RUN useradd --system --no-create-home --shell /usr/sbin/nologin sim
USER sim
EXPOSE 8000
# Inside a container the server must listen on 0.0.0.0; the launcher passes --host/--port/--model
# and --engine-arg name=value itself, these are only the defaults for a bare `docker run`.
ENTRYPOINT ["python", "-m", "benchflow.sim"]
CMD ["--host", "0.0.0.0", "--port", "8000", "--model", "sim-model"]
