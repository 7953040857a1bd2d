# A Prefect worker image with benchflow and all its dependencies (prefect, prefect-docker, pandas,
# SQLAlchemy, boto3, optuna, nvidia-ml-py ...), for Docker work pools: the Docker worker starts
# each flow run in a container of this image (it overrides the command with its own), and the same
# image can run the worker itself (the default command).
#
#   docker/build-image.sh worker [--base-image python:3.11-slim]
#   docker run -d -v /var/run/docker.sock:/var/run/docker.sock \
#     -e PREFECT_API_URL=http://prefect:4200/api -e BENCHFLOW_WORK_POOL=gpu-docker benchflow/worker:latest
#
# Backends are started as sibling containers through the mounted Docker socket. NVML needs the
# NVIDIA container runtime (`--gpus all`) on the flow-run containers of GPU hosts.
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS build
LABEL benchflow.build-stage=worker
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1
RUN python3 -m venv /opt/venv
COPY docker/ /tmp/docker/
COPY pyproject.toml README.md /src/
COPY benchflow/ /src/benchflow/
COPY sql/ /src/sql/
COPY flows/ /src/flows/
COPY tasks/ /src/tasks/
RUN set -eu; \
    if ls /tmp/docker/wheelhouse/*.whl >/dev/null 2>&1; then \
      export PIP_NO_INDEX=1 PIP_FIND_LINKS=/tmp/docker/wheelhouse; fi; \
    /opt/venv/bin/pip install -q /src; \
    /opt/venv/bin/python -c "import benchflow, prefect, prefect_docker, docker, pandas, sqlalchemy"

FROM ${BASE_IMAGE}
LABEL org.opencontainers.image.title="benchflow worker" \
      org.opencontainers.image.description="Prefect worker with benchflow for Docker work pools"
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 BENCHFLOW_WORK_POOL=benchflow-docker
COPY --from=build /opt/venv /opt/venv
WORKDIR /opt/benchflow
COPY deployments/ /opt/benchflow/deployments/
# Flow-run containers get their command from the worker; this default runs the worker itself.
CMD ["sh", "-c", "exec prefect worker start --pool \"$BENCHFLOW_WORK_POOL\" --type docker"]
