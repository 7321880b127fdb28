"""Settings stated once: the flags, their DIGITSERVE_ variables and docs/flags.md follow the
declarations of `digitserve serve` (ServeSettings) and `digitserve web` (WebSettings)."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from annotated_types import Ge, Le

from digitserve.cli import build_parser
from digitserve.errors import UsageError
from digitserve.flagdocs import command_parser, flags_markdown
from digitserve.serve.cli import settings_from_args
from digitserve.serve.settings import ServeSettings
from digitserve.settings import Settings, choices, expected, flag, setting, value_field
from digitserve.web.settings import WebSettings

ROOT = Path(__file__).resolve().parents[2]
DECLARED: dict[str, type[Settings]] = {"serve": ServeSettings, "web": WebSettings}
# Today's defaults, stated here on purpose: a change to one must be a decision, not an accident.
SERVE_DEFAULTS = dict(
    repo=Path("models"), model=(), name=None, version_policy="latest:1", model_control="poll", max_loaded_versions=0,
    host="127.0.0.1", port=50051, http_port=None, web=False, metrics_port=8000, reuse_port=False,
    tls_cert=None, tls_key=None, tls_client_ca=None, device="auto", cuda_device_id=0, cuda_mem_limit_mb=0,
    cudnn_conv_algo_search="HEURISTIC", intra_op_threads=0, inter_op_threads=0, graph_optimization="all",
    ort_spinning=False, max_batch_size=64, max_queue_delay_us=0, max_queue_images=4096, max_request_images=1024,
    instances=1, workers=1, drain_delay_seconds=0.0, grace_seconds=10.0, poll_seconds=5.0, artifact="onnx",
    max_image_bytes=1024 * 1024, max_image_pixels=4_000_000, image_threads=2,
)
WEB_DEFAULTS = dict(repo=Path("models"), name="digits", host="127.0.0.1", port=8080, node_modules=None)


def parse(command: str, *argv: str) -> argparse.Namespace:
    """`digitserve COMMAND ARGV...` through the real parser, DIGITSERVE_ variables included."""
    return build_parser(command).parse_args([command, *argv])


def parse_error(command: str, argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exit_:
        parse(command, *argv)
    assert exit_.value.code == 2
    return capsys.readouterr().err


def test_docs_flag_tables_match_the_declarations() -> None:
    written = (ROOT / "docs" / "flags.md").read_text()
    assert written == flags_markdown(), "docs/flags.md is stale: python -m digitserve.flagdocs > docs/flags.md"


@pytest.mark.parametrize(("command", "defaults"), [("serve", SERVE_DEFAULTS), ("web", WEB_DEFAULTS)])
def test_every_setting_is_a_flag_with_its_default(command: str, defaults: dict[str, Any]) -> None:
    settings = DECLARED[command]
    options = command_parser(command)._option_string_actions
    assert [name for name in settings.model_fields if flag(name) not in options] == []
    assert dict(settings.from_args(parse(command))) == dict(settings()) == defaults


def test_switches_and_the_metrics_off_flag() -> None:
    options = command_parser("serve")._option_string_actions
    for switch in ("--reuse-port", "--ort-spinning", "--no-metrics"):
        assert isinstance(options[switch], argparse._StoreTrueAction), switch
    settings = settings_from_args(parse("serve", "--no-metrics", "--reuse-port", "--ort-spinning"))
    assert (settings.metrics_port, settings.reuse_port, settings.ort_spinning) == (None, True, True)
    assert settings_from_args(parse("serve", "--metrics-port", "0")).metrics_port == 0


@pytest.mark.parametrize(
    ("command", "argv", "message"),
    [
        ("serve", ["--port", "70000"], "argument --port: must be a TCP port, 0 to 65535, got 70000"),
        ("serve", ["--metrics-port", "-1"], "argument --metrics-port: must be a TCP port, 0 to 65535, got -1"),
        ("serve", ["--instances", "0"], "argument --instances: must be at least 1, got 0"),
        ("serve", ["--max-queue-delay-us", "-1"], "argument --max-queue-delay-us: must be at least 0, got -1"),
        ("serve", ["--grace-seconds", "nan"], "argument --grace-seconds: must be at least 0, got nan"),
        ("serve", ["--cuda-device-id", "one"], "argument --cuda-device-id: must be a valid integer, got one"),
        ("serve", ["--device", "gpu"], "argument --device: invalid choice: 'gpu'"),
        ("serve", ["--version-policy", "newest"], "argument --version-policy: version policy 'newest' is not one of "
         "latest:N (N >= 1), all, specific:V[,V...]"),
        ("web", ["--port", "65536"], "argument --port: must be a TCP port, 0 to 65535, got 65536"),
    ],
)
def test_a_bad_flag_value_is_refused_naming_the_flag(
    command: str, argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert message in parse_error(command, argv, capsys)


def bounded_fields() -> list[tuple[str, str, str]]:
    """(command, field, a value just outside its bounds) for every bounded field declared."""
    cases = []
    for command, settings in DECLARED.items():
        for name, field in settings.model_fields.items():
            for item in value_field(field).metadata:
                if isinstance(item, Ge):
                    cases.append((command, name, str(item.ge - 1)))
                if isinstance(item, Le):
                    cases.append((command, name, str(item.le + 1)))
    return cases


@pytest.mark.parametrize(("command", "name", "bad"), bounded_fields())
def test_every_bound_holds_for_the_flag_its_variable_and_the_settings(
    command: str, name: str, bad: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = DECLARED[command]
    must = f"must be {expected(settings.model_fields[name])}, got {bad}"
    assert f"argument {flag(name)}: {must}" in parse_error(command, [flag(name), bad], capsys)
    variable = "DIGITSERVE_" + name.upper()
    monkeypatch.setenv(variable, bad)
    assert f"{variable}={bad!r}: {must}" in parse_error(command, [], capsys)
    with pytest.raises(UsageError, match=f"{flag(name)} {must}"):
        settings(**{name: bad})


def other_value(field: Any) -> str:
    """A valid value of the field other than its default, as a variable would spell it."""
    if choices(field):
        return next(str(choice) for choice in choices(field) if choice != field.default)
    kind = value_field(field).annotation
    if kind is bool:
        return "true"
    if kind in (int, float):
        return str(kind(1) if field.default is None else field.default + 1)
    return "elsewhere"


@pytest.mark.parametrize("command", DECLARED)
def test_every_variable_flows_through_to_the_settings(command: str, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = DECLARED[command]
    env = {"DIGITSERVE_" + name.upper(): other_value(field) for name, field in settings.model_fields.items()}
    if command == "serve":  # TLS needs a key beside the certificate, and 1025 queued images at least
        # explicit model control runs in one process: --workers keeps its default (tested elsewhere)
        env.update(DIGITSERVE_TLS_KEY="key.pem", DIGITSERVE_MAX_QUEUE_IMAGES="1025", DIGITSERVE_VERSION_POLICY="all",
                   DIGITSERVE_WORKERS="1")
    for variable, value in env.items():
        monkeypatch.setenv(variable, value)
    got = dict(settings.from_args(parse(command)))
    for name, field in settings.model_fields.items():
        value = ",".join(got[name]) if isinstance(got[name], tuple) else str(got[name])  # --model: repeatable
        assert value.lower() == env["DIGITSERVE_" + name.upper()].lower(), name
        assert got[name] != field.default or name == "workers", name
    # a flag on the command line wins over its variable
    assert settings.from_args(parse(command, "--port", "1234")).port == 1234


def test_model_is_repeatable_and_its_variable_takes_a_list(monkeypatch: pytest.MonkeyPatch) -> None:
    assert settings_from_args(parse("serve", "--model", "cnn", "--model", "softmax")).model == ("cnn", "softmax")
    monkeypatch.setenv("DIGITSERVE_MODEL", "cnn, softmax")
    assert settings_from_args(parse("serve")).model == ("cnn", "softmax")
    assert settings_from_args(parse("serve", "--model", "tiny")).model == ("tiny",)  # the flag wins
    with pytest.raises(UsageError, match="--name serves one model and --model chooses several"):
        settings_from_args(parse("serve", "--name", "digits"))


def test_explicit_model_control_needs_one_process() -> None:
    with pytest.raises(UsageError, match="--model-control explicit changes what one process serves"):
        ServeSettings(model_control="explicit", workers=2)
    assert ServeSettings(model_control="explicit").workers == 1


def test_web_needs_the_http_port() -> None:
    with pytest.raises(UsageError, match="--web serves the drawing page on the HTTP/REST port: give --http-port"):
        settings_from_args(parse("serve", "--web"))
    with pytest.raises(UsageError, match="give --http-port"):
        settings_from_args(parse("serve", "--web", "--http-port", "8001", "--no-http"))
    settings = settings_from_args(parse("serve", "--web", "--http-port", "0", "--model", "cnn", "--model", "mlp"))
    assert (settings.web, settings.page_model) == (True, "cnn")
    assert ServeSettings().page_model == "digits" and ServeSettings(name="tiny").page_model == "tiny"


def test_no_metrics_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIGITSERVE_NO_METRICS", "yes")
    assert settings_from_args(parse("serve")).metrics_port is None
    monkeypatch.setenv("DIGITSERVE_NO_METRICS", "off")
    assert settings_from_args(parse("serve")).metrics_port == 8000


def test_settings_that_do_not_fit_together_fail_as_usage_errors() -> None:
    with pytest.raises(UsageError, match="could never be queued"):
        settings_from_args(parse("serve", "--max-queue-images", "10", "--max-request-images", "20"))
    with pytest.raises(UsageError, match="--port must be a TCP port.*; --instances must be at least 1"):
        ServeSettings(port=-1, instances=0)
    with pytest.raises(UsageError, match="ServeSettings has no setting 'max_batch'"):
        ServeSettings(max_batch=3)  # type: ignore[call-arg]


def test_replace_validates_and_describe_names_every_setting() -> None:
    settings = ServeSettings(port=0)
    assert settings.replace(instances=2) == ServeSettings(port=0, instances=2)
    with pytest.raises(UsageError, match="--instances must be at least 1"):
        settings.replace(instances=0)
    with pytest.raises(Exception, match="frozen"):
        settings.port = 1  # type: ignore[misc]
    described = dict(pair.split("=", 1) for pair in settings.describe().split())
    assert described.keys() == ServeSettings.model_fields.keys() and described["port"] == "0"


def test_a_switch_cannot_default_on() -> None:
    class Bad(Settings):
        verbose: bool = setting(True, "say more")

    with pytest.raises(TypeError, match="verbose"):
        Bad.add_flags(argparse.ArgumentParser())


def test_serve_help_loads_neither_grpc_nor_onnxruntime() -> None:
    code = (
        "import sys\nfrom digitserve.cli import main\ntry:\n    main(['serve', '--help'])\n"
        "except SystemExit:\n    pass\nprint([m for m in ('grpc', 'onnxruntime') if m in sys.modules])"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip().endswith("[]"), done.stdout[-500:]


def test_without_pydantic_serve_and_web_name_the_extra_to_install() -> None:
    code = "import sys\nsys.modules['pydantic'] = None\nfrom digitserve.cli import main\nsys.exit(main(['web']))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "install the 'settings' extra" in done.stderr and "Traceback" not in done.stderr
