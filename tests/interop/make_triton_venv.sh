#!/usr/bin/env bash
# Build .venv-triton: Triton's gRPC and HTTP clients (tritonclient[grpc,http]) in a virtual environment of its
# own, because it needs protobuf>=6.30 and the project's .venv pins protobuf 5.29.
#
#   tests/interop/make_triton_venv.sh [VENV_DIR]     (default: .venv-triton at the repository root)
#
# Installs exactly the pinned, hashed tests/interop/requirements-triton.txt. Does nothing when
# the venv already holds that file's packages (a stamp records the file's sha256), so a
# Makefile's setup target can call it every time.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
venv="${1:-$root/.venv-triton}"
requirements="$root/tests/interop/requirements-triton.txt"
stamp="$venv/.requirements-sha256"
wanted="$(sha256sum "$requirements" | cut -d' ' -f1)"

if [[ -x "$venv/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$wanted" ]]; then
    echo "$venv is up to date"
    exit 0
fi
command -v uv >/dev/null || { echo "make_triton_venv.sh: needs uv (pip install uv)" >&2; exit 1; }
export UV_PYTHON_DOWNLOADS="${UV_PYTHON_DOWNLOADS:-never}"
uv venv --quiet --allow-existing --python 3.11 "$venv"
uv pip install --quiet --python "$venv/bin/python" --require-hashes -r "$requirements"
"$venv/bin/python" -c "import tritonclient.grpc, tritonclient.http, numpy"  # fail here, not in the test
echo "$wanted" > "$stamp"
echo "built $venv"
