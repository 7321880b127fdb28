"""The Dockerfiles, checked without a Docker engine: lint, what they install, what they leave out.

No image is built here. What is checked: hadolint; that every install comes from uv.lock; that the
serving extras resolve from the lock without TensorFlow (and the GPU one without the CPU
onnxruntime); that serve/ imports neither; that the GPU image stands on NVIDIA's CUDA 13 + cuDNN
runtime image with onnxruntime-gpu and no CUDA wheels; the build context .dockerignore leaves; the users,
ports and healthcheck the images declare.
"""

from __future__ import annotations

import ast
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from tests.deploy.deploy_files import (
    MODEL_JOB,
    ROOT,
    SERVE_DOCKERFILE,
    TRAIN_DOCKERFILE,
    copy_sources,
    dockerfile_stages,
    dockerignored,
    env_of,
    parse_cli,
    stage_chain,
)
from tests.support.commands import require_tool

DOCKERFILES = (SERVE_DOCKERFILE, TRAIN_DOCKERFILE)
TENSORFLOW_FAMILY = {"tensorflow", "tensorflow-cpu", "tensorflow-intel", "tf-keras", "keras", "tensorboard",
                     "tensorflowjs", "tf2onnx", "tensorflow-decision-forests", "ydf", "jax", "jaxlib"}


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_passes(dockerfile: Path) -> None:
    hadolint = require_tool("hadolint")
    result = subprocess.run([hadolint, "--no-color", str(dockerfile)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_installs_come_from_the_lock_files(dockerfile: Path) -> None:
    _, stages = dockerfile_stages(dockerfile)
    runs = [args for stage in stages for args in stage.all("RUN")]
    assert not [r for r in runs if re.search(r"\bpip3? install\b|\buv pip install\b|\bnpm install\b", r)]
    syncs = [cmd for r in runs for cmd in re.findall(r"uv sync[^&]*", r)]
    assert syncs and all("--locked" in cmd and "--no-dev" in cmd for cmd in syncs)
    assert all("npm ci" in r for r in runs if "npm " in r)


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_base_images_are_pinned(dockerfile: Path) -> None:
    args, stages = dockerfile_stages(dockerfile)
    for key, value in args.items():
        if key.endswith("_IMAGE"):
            assert re.fullmatch(r"[\w./-]+:\d[\w.-]*", value), f"{key}={value}: pin a version tag"
    assert args["UV_IMAGE"].endswith(":" + (ROOT / "Makefile").read_text().split("UV_VERSION := ")[1].split()[0])


@pytest.mark.parametrize("extra", ["serve", "serve-gpu", "serve-gpu-system"])
def test_serving_extras_resolve_without_tensorflow(extra: str) -> None:
    """What `uv sync --locked --no-dev --extra EXTRA` installs in the serving images."""
    packages = locked_packages("--extra", extra)
    assert not packages & TENSORFLOW_FAMILY, f"TensorFlow in the {extra} install: {packages & TENSORFLOW_FAMILY}"
    assert {"grpcio", "grpcio-health-checking", "numpy", "prometheus-client"} <= packages
    cuda_wheels = {name for name in packages if name.startswith("nvidia-")}
    if extra == "serve":
        assert "onnxruntime" in packages and "onnxruntime-gpu" not in packages
    else:  # both would install the same module: never both
        assert "onnxruntime-gpu" in packages and "onnxruntime" not in packages
    if extra == "serve-gpu":
        assert {"nvidia-cudnn-cu13", "nvidia-cublas", "nvidia-cuda-runtime"} <= cuda_wheels
    else:  # CPU, or CUDA from the system (the GPU image's CUDA base)
        assert not cuda_wheels


def test_training_extra_holds_the_pinned_tensorflow_stack() -> None:
    pins = locked_packages("--extra", "train", versions=True)
    assert pins["tensorflow"] == "2.19.0" and pins["tensorflowjs"] == "4.22.0" and pins["ydf"] == "0.12.0"
    assert pins["keras"].startswith("3.")


def locked_packages(*args: str, versions: bool = False) -> dict[str, str] | set[str]:  # type: ignore[return]
    uv = require_tool("uv")
    result = subprocess.run(
        [uv, "export", "--frozen", "--no-dev", "--no-hashes", "--no-emit-project", "--no-header", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    pins = {}
    for line in result.stdout.splitlines():
        match = re.match(r"^([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?==([^\s;]+)", line)
        if match:
            pins[match.group(1).lower().replace("_", "-")] = match.group(2)
    return pins if versions else set(pins)


def test_serving_code_imports_no_tensorflow() -> None:
    """serve/ and web/ import neither anywhere; the core package not at module level (its MNIST
    reader imports Keras inside the download fallback, which only training reaches)."""
    offenders = []
    for folder, anywhere in (("serve", True), ("web", True), ("src/digitserve", False)):
        for path in (ROOT / folder).rglob("*.py"):
            tree = ast.parse(path.read_text(), str(path))
            nodes = ast.walk(tree) if anywhere else iter(tree.body)
            for node in nodes:
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                    [node.module or ""] if isinstance(node, ast.ImportFrom) else []
                for name in names:
                    top = name.split(".")[0].replace("_", "-")
                    if top in TENSORFLOW_FAMILY or name.startswith(("digitserve.train", "digitserve.export")):
                        offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} imports {name}")
    assert not offenders, "\n".join(offenders)


def test_the_serving_install_holds_no_tensorflow(serving_venv: Path) -> None:
    """The install the serving image makes (its COPY list and its uv sync, run here)."""
    python = serving_venv / "bin" / "python"
    probe = ("import importlib.util as u; import digitserve.serve.server, digitserve.web.server; "
             "print(sorted(m for m in ('tensorflow', 'keras', 'tf_keras', 'onnxruntime') if u.find_spec(m)))")
    result = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "['onnxruntime']"
    installed = {p.name.split("-")[0].lower().replace("_", "-")
                 for p in (serving_venv / "lib").glob("python3*/site-packages/*.dist-info")}
    assert installed - {"digitserve"} == locked_packages("--extra", "serve")


def test_gpu_image_is_the_cuda_runtime_the_gpu_build_links() -> None:
    """The GPU image runs on NVIDIA's CUDA + cuDNN runtime image of the CUDA major version
    onnxruntime-gpu 1.31 is built for, with the Python minor version of uv.lock's CPU image."""
    args, stages = dockerfile_stages(SERVE_DOCKERFILE)
    chain = stage_chain(stages, "serve-gpu")
    assert chain[0].base == args["CUDA_IMAGE"]
    assert re.fullmatch(r"nvidia/cuda:13\.\d+\.\d+-cudnn-runtime-ubuntu\d+\.\d+", args["CUDA_IMAGE"])
    assert "python:3.11" in args["PYTHON_IMAGE"] and args["CUDA_PYTHON"].startswith("3.11.")
    builder = next(stage for stage in stages if stage.name == "build-gpu")
    syncs = [run for run in builder.all("RUN") if "uv sync" in run]
    assert syncs and all("--extra serve-gpu-system" in run and "--locked" in run for run in syncs)
    env = env_of(chain)
    assert env["DIGITSERVE_DEVICE"] == "cuda" and "LD_LIBRARY_PATH" not in env


@pytest.mark.parametrize("target", ["serve", "serve-gpu"])
def test_serving_images_run_as_a_user_with_the_health_probe(target: str) -> None:
    _, stages = dockerfile_stages(SERVE_DOCKERFILE)
    chain = stage_chain(stages, target)
    assert [u for s in chain for u in s.all("USER")] == ["10001:10001"]
    (healthcheck,) = [h for s in chain for h in s.all("HEALTHCHECK")]
    argv = re.search(r"CMD (\[.*\])", healthcheck)
    assert argv, healthcheck
    command = ast.literal_eval(argv.group(1))
    assert command[:2] == ["digitserve", "health"]
    env = env_of(chain)
    assert parse_cli(command[1:], {}).target == "127.0.0.1:50051"
    assert env["DIGITSERVE_HOST"] == "0.0.0.0", "inside a container the server must listen on every interface"
    exposed = {port for s in chain for args in s.all("EXPOSE") for port in args.split()}
    assert exposed == {"50051", "8000", "8080"}
    assert [c for s in chain for c in s.all("CMD")][-1] == '["digitserve", "serve"]'


def test_training_image_runs_the_model_job_as_a_user() -> None:
    _, stages = dockerfile_stages(TRAIN_DOCKERFILE)
    final = stages[-1]
    assert final.all("USER") == ["10001:10001"]
    assert final.all("CMD") == ['["digitserve-model-job"]']
    assert MODEL_JOB.stat().st_mode & 0o111, "model-job.sh must be executable"


def test_serving_image_copies_what_the_page_needs() -> None:
    """The page's TF.js files, to where `digitserve web` looks (DIGITSERVE_NODE_MODULES)."""
    from digitserve.web.paths import TFJS_DIST, TFJS_FILES

    _, stages = dockerfile_stages(SERVE_DOCKERFILE)
    runtime = next(stage for stage in stages if stage.name == "runtime")
    (words,) = [shlex.split(args) for args in runtime.all("COPY") if args.startswith("--from=tfjs")]
    sources, destination = words[1:-1], words[-1]
    assert sorted(Path(source).name for source in sources) == sorted(TFJS_FILES)
    assert all(Path(source).parent.as_posix().endswith(TFJS_DIST.as_posix()) for source in sources)
    env = env_of(stage_chain(stages, "serve"))
    assert destination.rstrip("/") == f"{env['DIGITSERVE_NODE_MODULES']}/{TFJS_DIST.as_posix()}"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_build_context_holds_what_the_images_copy(dockerfile: Path) -> None:
    _, stages = dockerfile_stages(dockerfile)
    for stage in stages:
        for source in copy_sources(stage):
            assert (ROOT / source).exists(), f"{dockerfile.name} COPYs {source}, which does not exist"
            assert not dockerignored(source), f"{dockerfile.name} COPYs {source}, which .dockerignore drops"


@pytest.mark.parametrize("path", [".git/HEAD", ".venv/bin/python", ".venv-triton/bin/python",
                                  "node_modules/@tensorflow/tfjs/package.json",
                                  "models/digits/1/manifest.json", "data/mnist/train-images-idx3-ubyte.gz",
                                  "web/node_modules/x.js", "serve/__pycache__/cli.cpython-311.pyc",
                                  "src/digitserve.egg-info/PKG-INFO", "tests/conftest.py", "build/lib/x.py"])
def test_dockerignore_keeps_out(path: str) -> None:
    assert dockerignored(path)


@pytest.mark.parametrize(("target", "passes"), [("serve", True), ("serve-gpu", False)])
def test_build_time_checks_run_on_the_serving_install(serving_venv: Path, target: str, passes: bool) -> None:
    """Each serving target ends with a `python -c` check that fails its build. On the CPU install
    the CPU check passes and the GPU check (CUDA provider present) fails, as it should."""
    _, stages = dockerfile_stages(SERVE_DOCKERFILE)
    check = shlex.split(stage_chain(stages, target)[-1].all("RUN")[-1])
    assert check[:2] == ["python", "-c"]
    result = subprocess.run([str(serving_venv / "bin" / "python"), "-c", check[2]],
                            capture_output=True, text=True, timeout=120)
    assert (result.returncode == 0) == passes, result.stderr
    if not passes:
        assert "onnxruntime-gpu without CUDA" in result.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_images_copy_every_package_folder(dockerfile: Path) -> None:
    """setuptools builds the wheel from every folder of package-dir: a new stage folder must be
    added to the Dockerfiles' `sources` stage too."""
    import tomllib

    package_dirs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    _, stages = dockerfile_stages(dockerfile)
    copied = set(copy_sources(next(stage for stage in stages if stage.name == "sources")))
    assert set(package_dirs.values()) | {"pyproject.toml", "uv.lock", "README.md"} <= copied
