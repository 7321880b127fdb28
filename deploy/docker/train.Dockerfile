# syntax=docker/dockerfile:1.7
#
# The training and export image: the pinned TensorFlow stack of uv.lock (extra `train`:
# TensorFlow 2.19, Keras 3, tf2onnx, tensorflowjs, ai-edge-litert, onnxruntime to verify the
# ONNX export) and Node.js with the locked @tensorflow/tfjs, which `digitserve export` runs to
# prove the TF.js export gives the same probabilities as Keras. Built from the repository root:
#
#   docker build -f deploy/docker/train.Dockerfile -t digitserve/train:0.1.0 .
#
# Its default command, digitserve-model-job (deploy/docker/model-job.sh), trains and exports into
# /models only what is missing there: the compose `train` service and the Kubernetes Job.
# Node.js 20 is the version the TF.js parity check was run with (docs/toolchain.md); it only runs
# that check offline, inside this image.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG UV_IMAGE=ghcr.io/astral-sh/uv:0.13.8
ARG NODE_IMAGE=node:20-bookworm-slim

FROM ${UV_IMAGE} AS uv

FROM ${NODE_IMAGE} AS node
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund

FROM scratch AS sources
COPY pyproject.toml uv.lock README.md /src/
COPY src /src/src
COPY train /src/train
COPY export /src/export
COPY serve /src/serve
COPY client /src/client
COPY bench /src/bench
COPY web /src/web

FROM ${PYTHON_IMAGE} AS build
COPY --from=uv /uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 \
    UV_CACHE_DIR=/uv-cache \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=/usr/local/bin/python3.11 \
    UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /src
COPY pyproject.toml uv.lock README.md ./
# The TensorFlow stack (about 2.5 GB) in its own layer, so source edits do not download it again.
RUN --mount=type=cache,target=/uv-cache \
    uv sync --locked --no-dev --extra train --no-install-project
COPY --from=sources /src /src
RUN --mount=type=cache,target=/uv-cache \
    uv sync --locked --no-dev --extra train --no-editable

FROM ${PYTHON_IMAGE} AS train
RUN groupadd --system --gid 10001 digitserve \
 && useradd --system --uid 10001 --gid 10001 --home-dir /app --no-create-home \
      --shell /usr/sbin/nologin digitserve \
 && install -d -o 10001 -g 10001 /app /app/.keras /models
WORKDIR /app
COPY --from=node /usr/local/bin/node /usr/local/bin/node
COPY --from=node /src/node_modules /app/node_modules
COPY --from=build /app/.venv /app/.venv
COPY --chmod=0755 deploy/docker/model-job.sh /usr/local/bin/digitserve-model-job
# /models: a fresh named volume takes this folder's owner (uid 10001), so the job can write it.
# MNIST: mount IDX files at /data/mnist; when that folder is empty the job uses the Keras download.
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    KERAS_HOME=/app/.keras \
    TF_CPP_MIN_LOG_LEVEL=2 \
    DIGITSERVE_REPO=/models \
    DIGITSERVE_DATA=/data/mnist \
    DIGITSERVE_NODE_MODULES=/app
USER 10001:10001
CMD ["digitserve-model-job"]
