# syntax=docker/dockerfile:1.7
#
# The serving image: `digitserve serve` (gRPC + metrics) and `digitserve web` (the drawing page)
# on ONNX Runtime, with no TensorFlow in it. Two final targets, built from the repository root:
#
#   docker build -f deploy/docker/serve.Dockerfile --target serve     -t digitserve/serve:0.1.0 .
#   docker build -f deploy/docker/serve.Dockerfile --target serve-gpu -t digitserve/serve-gpu:0.1.0 .
#
# Python packages come from uv.lock and nothing else (`uv sync --locked` fails if the lock and
# pyproject.toml disagree): extra `serve` (onnxruntime) for CPU, extra `serve-gpu-system`
# (onnxruntime-gpu) for the GPU. The builder stages make the virtual environment; the final
# stages copy only that environment, two TF.js files for the page, and run as an unprivileged
# user (uid 10001).
#
# GPU: the final stage is NVIDIA's CUDA 13 + cuDNN 9 runtime image, so CUDA and cuDNN are
# NVIDIA's system packages (the layout Triton and TF Serving ship on), the container toolkit
# checks the host driver against NVIDIA_REQUIRE_CUDA before the server starts, and
# onnxruntime-gpu comes without its pip CUDA wheels (no second copy of cuBLAS and cuDNN).
# Ubuntu's Python is 3.12; the image carries uv's standalone CPython 3.11, the version uv.lock
# and the CPU image use. The host needs an NVIDIA driver for CUDA 13 (R580 or newer) and the
# NVIDIA Container Toolkit. (Installs outside Docker with only a driver use the `serve-gpu`
# extra, which brings the CUDA and cuDNN wheels instead.)

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG UV_IMAGE=ghcr.io/astral-sh/uv:0.13.8
ARG NODE_IMAGE=node:20-bookworm-slim
ARG CUDA_IMAGE=nvidia/cuda:13.0.1-cudnn-runtime-ubuntu24.04
ARG CUDA_PYTHON=3.11.18

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
COPY client /src/client
COPY bench /src/bench
COPY web /src/web

# --- builders: a virtual environment at /app/.venv, exactly as uv.lock says -----------------------
FROM ${PYTHON_IMAGE} AS build-base
COPY --from=uv /uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 \
    UV_CACHE_DIR=/uv-cache \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=/usr/local/bin/python3.11 \
    UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /src
COPY pyproject.toml uv.lock README.md ./

# Dependencies first (a layer that survives source edits), then the project as a plain wheel.
FROM build-base AS build-cpu
RUN --mount=type=cache,target=/uv-cache \
    uv sync --locked --no-dev --extra serve --no-install-project
COPY --from=sources /src /src
RUN --mount=type=cache,target=/uv-cache \
    uv sync --locked --no-dev --extra serve --no-editable

# The GPU builder runs on the CUDA image with uv's standalone CPython in /opt/python, which the
# final GPU stage copies to the same path (the virtual environment points there).
FROM ${CUDA_IMAGE} AS build-gpu
ARG CUDA_PYTHON
COPY --from=uv /uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 \
    UV_CACHE_DIR=/uv-cache \
    UV_LINK_MODE=copy \
    UV_PYTHON_INSTALL_DIR=/opt/python \
    UV_PYTHON=${CUDA_PYTHON} \
    UV_PROJECT_ENVIRONMENT=/app/.venv
RUN uv python install ${CUDA_PYTHON}
WORKDIR /src
COPY pyproject.toml uv.lock README.md ./
RUN --mount=type=cache,target=/uv-cache \
    uv sync --locked --no-dev --extra serve-gpu-system --no-install-project
COPY --from=sources /src /src
RUN --mount=type=cache,target=/uv-cache \
    uv sync --locked --no-dev --extra serve-gpu-system --no-editable

# --- the CPU image's base -------------------------------------------------------------------
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

# --- GPU: the CUDA 13 / cuDNN 9 runtime image with the same user, files, ports and probe ----------
FROM ${CUDA_IMAGE} AS serve-gpu
RUN groupadd --system --gid 10001 digitserve \
 && useradd --system --uid 10001 --gid 10001 --home-dir /app --no-create-home \
      --shell /usr/sbin/nologin digitserve \
 && install -d -o 10001 -g 10001 /app /models
WORKDIR /app
COPY --from=build-gpu /opt/python /opt/python
COPY --from=build-gpu /app/.venv /app/.venv
COPY --from=runtime /app/node_modules /app/node_modules
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    DIGITSERVE_HOST=0.0.0.0 \
    DIGITSERVE_REPO=/models \
    DIGITSERVE_NODE_MODULES=/app \
    DIGITSERVE_DEVICE=cuda
EXPOSE 50051 8000 8080
USER 10001:10001
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["digitserve", "health", "--timeout", "4"]
CMD ["digitserve", "serve"]
# Fail the build, not the deployment: the GPU build must offer CUDA and hold no TensorFlow.
RUN python -c "import importlib.util as u, onnxruntime as ort, sys; \
ok = 'CUDAExecutionProvider' in ort.get_available_providers() and u.find_spec('tensorflow') is None; \
import digitserve.serve.server; sys.exit(0 if ok else 'onnxruntime-gpu without CUDA, or TensorFlow present')"

# --- CPU (the default target) -----------------------------------------------------------------------
FROM runtime AS serve
COPY --from=build-cpu /app/.venv /app/.venv
RUN python -c "import importlib.util as u, sys; import digitserve.serve.server; \
sys.exit(0 if u.find_spec('tensorflow') is None and u.find_spec('keras') is None else 'TensorFlow in the serving image')"
