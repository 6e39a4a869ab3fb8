"""docker-compose.yml and the Dockerfile, checked without a Docker engine: the services, their
commands (parsed by the CLI's own parser), ports, environment and health checks."""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]  # PyYAML ships no type stubs

from consumer.config import Settings
from consumer.entrypoints.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
COMPOSE: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text("utf-8"))
SERVICES: dict[str, Any] = COMPOSE["services"]
BATCHOPS_SERVICES = ["migrate", "consumer", "api"]


def parse_command(argv: list[str]) -> Any:
    """The CLI's own parse of `batchops ARGV`; argparse exits on an unknown command."""
    args = build_parser().parse_args(argv)
    assert hasattr(args, "command"), f"`batchops {' '.join(argv)}` is not a complete command"
    return args


def environment(service: str) -> dict[str, str]:
    env = SERVICES[service].get("environment", {})
    assert isinstance(env, dict), f"{service}: write environment as a mapping"
    return {key: str(value) for key, value in env.items()}


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined."""
    text = (ROOT / "Dockerfile").read_text("utf-8")
    logical = re.sub(r"\\\n", " ", text)
    instructions = []
    for line in logical.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            keyword, _, rest = stripped.partition(" ")
            instructions.append((keyword.upper(), rest.strip()))
    return instructions


class TestComposeServices:
    def test_the_broker_database_migration_consumer_and_api_are_all_there(self) -> None:
        assert {"rabbitmq", "postgres", *BATCHOPS_SERVICES} <= set(SERVICES)

    def test_rabbitmq_runs_with_the_management_ui_on_its_usual_ports(self) -> None:
        rabbitmq = SERVICES["rabbitmq"]

        assert rabbitmq["image"] == "rabbitmq:3.13-management"
        assert {"5672:5672", "15672:15672"} <= set(rabbitmq["ports"])

    @pytest.mark.parametrize("service", ["rabbitmq", "postgres", "api"])
    def test_a_long_running_service_has_a_health_check(self, service: str) -> None:
        check = SERVICES[service].get("healthcheck", {})

        assert check.get("test"), f"{service} has no health check"
        assert check["test"][0] in {"CMD", "CMD-SHELL"}

    @pytest.mark.parametrize(
        ("service", "expected"),
        [("migrate", ["db", "upgrade"]), ("consumer", ["consume"]), ("api", ["api"])],
    )
    def test_each_batchops_service_runs_a_real_batchops_command(
        self, service: str, expected: list[str]
    ) -> None:
        command = SERVICES[service]["command"]

        parsed, wanted = parse_command(command), parse_command(expected)

        assert parsed.command is wanted.command
        assert getattr(parsed, "roles", None) == getattr(wanted, "roles", None)

    @pytest.mark.parametrize("service", BATCHOPS_SERVICES)
    def test_every_batchops_variable_is_a_real_setting_with_a_valid_value(
        self, service: str
    ) -> None:
        env = environment(service)
        settings = {
            key.removeprefix("BATCHOPS_").lower(): value
            for key, value in env.items()
            if key.startswith("BATCHOPS_")
        }

        unknown = set(settings) - set(Settings.model_fields)
        assert not unknown, f"{service}: no such setting: {sorted(unknown)}"
        assert {"database_url", "amqp_url"} <= set(settings)
        Settings.model_validate(settings)  # raises on a value refused at start-up

    @pytest.mark.parametrize("service", BATCHOPS_SERVICES)
    def test_batchops_reaches_the_broker_and_database_of_this_file(self, service: str) -> None:
        env = environment(service)

        assert "@postgres:5432/" in env["BATCHOPS_DATABASE_URL"]
        assert "@rabbitmq:5672/" in env["BATCHOPS_AMQP_URL"]
        assert SERVICES[service]["build"] == "."

    def test_every_dependency_is_a_service_of_this_file(self) -> None:
        for name, service in SERVICES.items():
            for dependency in service.get("depends_on", {}):
                assert dependency in SERVICES, f"{name} depends on unknown {dependency}"


class TestScalingAndStartOrder:
    def test_the_consumer_can_be_scaled_out(self) -> None:
        consumer = SERVICES["consumer"]

        assert "container_name" not in consumer, "a fixed name forbids --scale"
        assert "ports" not in consumer, "a host port can be bound by one replica only"

    @pytest.mark.parametrize("service", ["consumer", "api"])
    def test_the_service_starts_after_a_successful_migration_and_a_healthy_broker(
        self, service: str
    ) -> None:
        depends = SERVICES[service]["depends_on"]

        assert depends["migrate"]["condition"] == "service_completed_successfully"
        assert depends["rabbitmq"]["condition"] == "service_healthy"

    def test_the_migration_runs_once_and_after_the_database_is_healthy(self) -> None:
        migrate = SERVICES["migrate"]

        assert migrate.get("restart", "no") == "no"
        assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"

    def test_the_api_publishes_its_port_and_checks_healthz_with_python(self) -> None:
        api = SERVICES["api"]
        port = environment("api").get("BATCHOPS_HTTP_PORT", "8000")
        test = api["healthcheck"]["test"]

        assert f"{port}:{port}" in api["ports"]
        assert test[:3] == ["CMD", "python", "-c"], "the image has python, not curl"
        assert f"127.0.0.1:{port}/healthz" in test[3]
        compile(test[3], "<healthcheck>", "exec")  # raises SyntaxError on a broken check


class TestDockerfile:
    def test_it_is_multi_stage_and_the_last_stage_copies_from_the_build(self) -> None:
        instructions = dockerfile_instructions()
        stages = [i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM"]

        assert len(stages) >= 2
        final = instructions[stages[-1] :]
        assert any(k == "COPY" and a.startswith("--from=") for k, a in final)

    def test_the_final_stage_runs_as_a_non_root_user(self) -> None:
        instructions = dockerfile_instructions()
        last_from = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
        users = [args for keyword, args in instructions[last_from:] if keyword == "USER"]

        assert users, "the final stage sets no USER"
        user = users[-1].split(":")[0]
        assert user not in {"root", "0"}

    def test_the_entrypoint_is_the_batchops_console_script(self) -> None:
        instructions = dict(dockerfile_instructions())
        scripts = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))["project"]["scripts"]

        assert json.loads(instructions["ENTRYPOINT"]) == ["batchops"]
        assert scripts["batchops"] == "consumer.entrypoints.cli:main"

    def test_the_default_command_is_a_real_batchops_command(self) -> None:
        cmd = dict(dockerfile_instructions())["CMD"]
        argv = json.loads(cmd) if cmd.startswith("[") else shlex.split(cmd)

        parse_command(argv)

    def test_the_image_holds_the_package_alone_and_no_example_handler(self) -> None:
        copied = {
            source
            for keyword, args in dockerfile_instructions()
            if keyword == "COPY" and not args.startswith("--from=")
            for source in args.split()[:-1]
        }
        ignored = (ROOT / ".dockerignore").read_text("utf-8").split()
        project = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))["project"]

        assert copied == {"pyproject.toml", "README.md", "contracts", "publisher", "consumer"}
        assert "examples" in ignored, "the build context leaves the examples out"
        # A handler registered by the package would be accepted by every deployment.
        assert "batchops.handlers" not in project.get("entry-points", {})
