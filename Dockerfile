# syntax=docker/dockerfile:1.7
# The salient worker image: what the Docker and Kubernetes work pools (deploy/docker-pool.json,
# deploy/k8s-pool.json) start for each flow run. The project lives at /app (SALIENT_PROJECT_DIR, where
# prefect.yaml's pull step changes into) with its pinned set in /app/.venv, installed as the Makefile
# does (uv, plain pip as the fallback; then `pip install --no-deps -e .` and `pip check`).
#
#   CPU (default):  docker build -t salient-worker:$(git rev-parse --short HEAD) .
#   CUDA:           docker build --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 \
#                       -t salient-worker:$(git rev-parse --short HEAD)-cu128 .
#   local wheels:   docker build --build-context wheels=/opt/wheels ...   (a wheel folder, e.g. the
#                   CPU torch of the development machines; it replaces the empty `wheels` stage below)
#
# TORCH_INDEX is the index torch and torchvision come from, at the versions requirements.txt pins:
# the CPU build by default, a CUDA build from a cuXYZ index. The CUDA wheels bring their own CUDA
# runtime libraries, so the base stays a plain Python image; the host needs only the NVIDIA driver and
# container toolkit (Docker: nvidia as the default runtime; Kubernetes: the NVIDIA device plugin).
# PyAV and decord wheels bundle their FFmpeg libraries, so no system FFmpeg is installed.
# .git is part of the build context on purpose: DVC experiments (the pipeline flow's overrides run
# `dvc exp run --temp`) are git refs, and MLflow runs record the image's commit.

ARG BASE=python:3.11-slim-bookworm

# An empty wheel folder unless `--build-context wheels=DIR` names one.
FROM scratch AS wheels

FROM ${BASE}
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ARG UID=1000
ARG GIT_COMMIT=unknown
LABEL org.opencontainers.image.title="salient-worker" \
      org.opencontainers.image.description="salient: DVC + Prefect + Optuna + MLflow workflow for efficient video recognition" \
      org.opencontainers.image.revision="${GIT_COMMIT}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      salient.torch-index="${TORCH_INDEX}"

# The same telemetry opt-outs as the Makefile and the pool templates; the venv first on PATH (the DVC
# stages run `python -m ...` from PATH); tool state under /app/.salient (components.core.runtime).
ENV SALIENT_PROJECT_DIR=/app \
    VIRTUAL_ENV=/app/.venv \
    PATH=/app/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DO_NOT_TRACK=1 \
    DVC_NO_ANALYTICS=1 \
    MLFLOW_DISABLE_TELEMETRY=true \
    HF_HUB_OFFLINE=1 \
    HF_HUB_DISABLE_TELEMETRY=1 \
    PREFECT_SERVER_ANALYTICS_ENABLED=false \
    PREFECT_RUNNER_AUTO_INSTALL_DEPENDENCIES=false \
    TOKENIZERS_PARALLELISM=false

# git: DVC and the pipeline flow call it. A non-root user owns /app: DVC, MLflow and Prefect write
# there (.dvc/tmp, data/, reports/, .salient/). /app/.dvc/cache is where the Docker pool mounts the
# host's DVC cache.
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends git ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid "${UID}" --shell /bin/bash salient \
    && mkdir -p /app/.dvc/cache /app/.salient \
    && chown -R salient:salient /app \
    && git config --system --add safe.directory /app

WORKDIR /app
USER salient

# The pinned set first (its own layer: code changes do not reinstall it). torch and torchvision come
# from TORCH_INDEX at requirements.txt's pins; the rest of requirements.txt then keeps them.
COPY --chown=salient:salient requirements.txt pyproject.toml ./
RUN --mount=type=bind,from=wheels,target=/wheels \
    --mount=type=cache,target=/home/salient/.cache,uid=${UID} \
    set -eu; \
    python -m venv /app/.venv; \
    export UV_FIND_LINKS=/wheels PIP_FIND_LINKS=/wheels; \
    torch_pins="$(grep -E '^(torch|torchvision)==' requirements.txt | tr '\n' ' ')"; \
    ( pip install -q uv \
      && uv pip install -q --python /app/.venv/bin/python --index-url "${TORCH_INDEX}" ${torch_pins} \
      && uv pip install -q --compile-bytecode --python /app/.venv/bin/python -r requirements.txt ) \
    || ( pip install -q --index-url "${TORCH_INDEX}" ${torch_pins} \
         && pip install -q -r requirements.txt )

COPY --chown=salient:salient . .
RUN pip install -q --no-deps -e . \
    && pip check \
    && mkdir -p /app/.dvc/cache /app/.salient

# Flow runs get their command from the Prefect worker (`prefect flow-run execute`), which replaces
# this one; run by hand, the image lists the project's commands.
CMD ["salient", "--help"]
