# syntax=docker/dockerfile:1.7
#
# The serving image: `digitserve serve` (gRPC + metrics) and `digitserve web` (the drawing page)
# on ONNX Runtime, with no TensorFlow in it. Two final targets, built from the repository root:
#
#   docker build -f deploy/docker/serve.Dockerfile --target serve     -t digitserve/serve:0.1.0 .
#   docker build -f deploy/docker/serve.Dockerfile --target serve-gpu -t digitserve/serve-gpu:0.1.0 .
#
# Python packages come from uv.lock and nothing else (`uv sync --locked` fails if the lock and
# pyproject.toml disagree): extra `serve` (onnxruntime) for CPU, extra `serve-gpu`
# (onnxruntime-gpu with its `cuda` and `cudnn` extras) for the GPU. The builder stages make the
# virtual environment; the final stages copy only that environment, two TF.js files for the page,
# and run as an unprivileged user (uid 10001).
#
# GPU: the CUDA 13 and cuDNN 9 user-space libraries are the NVIDIA wheels that uv.lock pins for
# onnxruntime-gpu 1.31.1 (nvidia-cublas, -cuda-runtime, -cufft, -curand, -cuda-nvrtc,
# -cudnn-cu13), on the same plain Python base as the CPU image, rather than an nvidia/cuda base
# image: the versions ONNX Runtime was built against come locked and hash-checked with
# everything else, there is no second copy of CUDA from a base image to drift out of step, and
# both targets share every layer but one. The host needs only an NVIDIA driver that supports
# CUDA 13 (R580 or newer) and the NVIDIA Container Toolkit, which injects libcuda.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG UV_IMAGE=ghcr.io/astral-sh/uv:0.13.8
ARG NODE_IMAGE=node:20-bookworm-slim

FROM ${UV_IMAGE} AS uv

# --- the page's TensorFlow.js, from the locked npm install ----------------------------------------
FROM ${NODE_IMAGE} AS tfjs
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund

# --- the project's own files: what setuptools needs to build the wheel (every mapped package) ----
FROM scratch AS sources
COPY pyproject.toml uv.lock README.md /src/
COPY src /src/src
COPY train /src/train
COPY export /src/export
COPY serve /src/serve
COPY bench /src/bench
COPY web /src/web

# --- builders: a virtual environment at /app/.venv, exactly as uv.lock says -----------------------
FROM ${PYTHON_IMAGE} AS build-base
COPY --from=uv /uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=/usr/local/bin/python3.11 \
    UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /src
COPY pyproject.toml uv.lock README.md ./

# Dependencies first (a layer that survives source edits), then the project as a plain wheel.
FROM build-base AS build-cpu
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --locked --no-dev --extra serve --no-install-project
COPY --from=sources /src /src
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --locked --no-dev --extra serve --no-editable

FROM build-base AS build-gpu
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --locked --no-dev --extra serve-gpu --no-install-project
COPY --from=sources /src /src
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --locked --no-dev --extra serve-gpu --no-editable

# --- what both serving images share -------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
RUN groupadd --system --gid 10001 digitserve \
 && useradd --system --uid 10001 --gid 10001 --home-dir /app --no-create-home \
      --shell /usr/sbin/nologin digitserve \
 && install -d -o 10001 -g 10001 /app /models
WORKDIR /app
# All `digitserve web` takes from @tensorflow/tfjs (web/paths.py TFJS_FILES).
COPY --from=tfjs /src/node_modules/@tensorflow/tfjs/dist/tf.min.js \
                 /src/node_modules/@tensorflow/tfjs/dist/tf.min.js.map \
                 /app/node_modules/@tensorflow/tfjs/dist/
# In a container the server must listen on every interface; the repository is the /models volume.
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    DIGITSERVE_HOST=0.0.0.0 \
    DIGITSERVE_REPO=/models \
    DIGITSERVE_NODE_MODULES=/app
EXPOSE 50051 8000 8080
USER 10001:10001
# grpc.health.v1 through the CLI (127.0.0.1 on DIGITSERVE_PORT, else 50051): SERVING only once the
# model is loaded, verified and warmed.
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["digitserve", "health", "--timeout", "4"]
CMD ["digitserve", "serve"]

# --- GPU: onnxruntime-gpu and the CUDA 13 / cuDNN 9 wheels ---------------------------------------
FROM runtime AS serve-gpu
COPY --from=build-gpu /app/.venv /app/.venv
# Where the NVIDIA wheels put their libraries (the layout onnxruntime.preload_dlls looks for),
# so the CUDA execution provider finds them without any preloading.
ENV LD_LIBRARY_PATH=/app/.venv/lib/python3.11/site-packages/nvidia/cu13/lib:/app/.venv/lib/python3.11/site-packages/nvidia/cudnn/lib \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    DIGITSERVE_DEVICE=cuda
# Fail the build, not the deployment: the GPU build must offer CUDA and hold no TensorFlow.
RUN python -c "import importlib.util as u, onnxruntime as ort, sys; \
ok = 'CUDAExecutionProvider' in ort.get_available_providers() and u.find_spec('tensorflow') is None; \
import digitserve.serve.server; sys.exit(0 if ok else 'onnxruntime-gpu without CUDA, or TensorFlow present')"

# --- CPU (the default target) -----------------------------------------------------------------------
FROM runtime AS serve
COPY --from=build-cpu /app/.venv /app/.venv
RUN python -c "import importlib.util as u, sys; import digitserve.serve.server; \
sys.exit(0 if u.find_spec('tensorflow') is None and u.find_spec('keras') is None else 'TensorFlow in the serving image')"
