"""docker-compose.yml and the Dockerfile, checked without a Docker engine: every refundflow
command is a real subcommand with real options, every REFUNDFLOW_* setting exists, every image
is pinned, long-running services have healthchecks, one-shot jobs gate what depends on them."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import typer.main
import yaml

from refundflow.cli.main import app
from refundflow.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
VERSIONS = dict(
    line.split("=", 1)
    for line in (ROOT / ".env").read_text().splitlines()
    if line and not line.startswith("#")
)
OURS = {name for name, service in SERVICES.items() if service["image"] == "${REFUNDFLOW_IMAGE}"}
ONE_SHOT = {"temporal-schema", "migrate", "setup"}


def _resolve(value: str) -> str:
    return re.sub(r"\$\{(\w+)\}", lambda m: VERSIONS[m.group(1)], value)


def test_every_image_is_pinned_in_env() -> None:
    for name, service in SERVICES.items():
        image = _resolve(service["image"])
        repository, _, tag = image.rpartition(":")
        assert repository and re.search(r"\d", tag) and tag != "latest", (name, image)


@pytest.mark.parametrize("name", sorted(OURS))
def test_refundflow_services_run_real_subcommands(name: str) -> None:
    command: Any = typer.main.get_command(app)
    args = list(SERVICES[name]["command"])
    while getattr(command, "commands", None):  # a group: its subcommand is the next word
        command = command.commands[args.pop(0)]  # KeyError: no such subcommand
    assert not hasattr(command, "commands"), f"{name}: a group, not a command"
    # Parsing the options as the container would: an unknown option or value fails here.
    command.make_context(command.name, args, resilient_parsing=False)


def test_every_refundflow_setting_named_in_compose_exists() -> None:
    fields = set(Settings.model_fields)
    for name in OURS:
        for variable in SERVICES[name].get("environment", {}):
            assert variable.startswith("REFUNDFLOW_"), (name, variable)
            assert variable.removeprefix("REFUNDFLOW_").lower() in fields, (name, variable)
        for secret in SERVICES[name].get("secrets", []):
            # A secret file is read as the setting of its name (pydantic-settings secrets_dir).
            assert secret.removeprefix("refundflow_") in fields, (name, secret)


def test_long_running_services_have_healthchecks_and_every_dependency_a_condition() -> None:
    for name, service in SERVICES.items():
        if name not in ONE_SHOT and name not in ("temporal-ui", "grafana"):
            assert "healthcheck" in service, name
        for dependency, rule in service.get("depends_on", {}).items():
            wanted = (
                "service_completed_successfully" if dependency in ONE_SHOT else "service_healthy"
            )
            assert rule["condition"] == wanted, (name, dependency)
    for name in ONE_SHOT:
        assert SERVICES[name]["restart"].startswith("on-failure"), name


def test_workers_scale_and_stop_after_their_graceful_shutdown() -> None:
    worker = SERVICES["worker"]
    assert int(_resolve(str(worker["deploy"]["replicas"]))) >= 2
    grace = int(worker["stop_grace_period"].removesuffix("s"))
    shutdown = float(worker["environment"]["REFUNDFLOW_WORKER_GRACEFUL_SHUTDOWN_SECONDS"])
    assert grace > shutdown
    assert "/readyz" in " ".join(SERVICES["api"]["healthcheck"]["test"])


def test_mounted_files_and_secrets_exist_in_the_repository() -> None:
    for name, service in SERVICES.items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), (name, source)
    for secret in COMPOSE["secrets"].values():
        # The secrets themselves are the operator's; their folder documents each one.
        assert (ROOT / secret["file"]).parent.joinpath("README.md").exists()
    assert set(COMPOSE["secrets"]) <= {
        s for service in SERVICES.values() for s in service.get("secrets", [])
    }


def test_observability_is_a_profile() -> None:
    assert SERVICES["prometheus"]["profiles"] == ["observability"]
    assert SERVICES["grafana"]["profiles"] == ["observability"]
    scraped = (ROOT / "deploy/prometheus/prometheus.yml").read_text()
    assert "api:8000" in scraped and "worker" in scraped and "temporal:9090" in scraped


def test_the_image_runs_refundflow_as_a_user_without_privileges() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert dockerfile.count("FROM ") >= 2  # multi-stage: no build tools in the image
    assert re.search(r"^USER (?!root)\S+", dockerfile, re.MULTILINE)
    assert 'ENTRYPOINT ["refundflow"]' in dockerfile
    assert (ROOT / ".dockerignore").exists()


def test_the_codec_server_holds_payload_keys_only_and_the_ui_uses_it() -> None:
    codec = SERVICES["codec-server"]
    assert codec["command"][0] == "codec-server"
    # What a process the UI talks to holds: never the database secrets' keys or providers.
    assert set(codec["secrets"]) == {"refundflow_database_url", "refundflow_payload_keys"}
    assert "REFUNDFLOW_CODEC_UI_ORIGIN" in codec["environment"]
    assert "8234" in SERVICES["temporal-ui"]["environment"]["TEMPORAL_CODEC_ENDPOINT"]
    for name in OURS - {"codec-server"}:
        secrets = SERVICES[name].get("secrets") or COMPOSE["x-refundflow"]["secrets"]
        assert "refundflow_payload_keys" in secrets, name
