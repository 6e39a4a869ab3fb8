"""deploy/k8s/, checked without a cluster or the network: every Kubernetes object against the
API schemas that ship with the `kubernetes-validate` package (strict: an unknown field fails),
KEDA's objects against the JSON Schemas committed beside the manifests, and what ties the
manifests to batchops itself (commands, settings, probes, ports, grace period, names)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema_rs
import kubernetes_validate
import pytest
import yaml  # type: ignore[import-untyped]  # PyYAML ships no type stubs

from consumer.config import Settings
from consumer.entrypoints.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
SCHEMAS = K8S / "schemas"
# The oldest Kubernetes release the manifests are written for (every API they use is stable
# there); kubernetes-validate ships its schemas.
KUBERNETES = "1.28.0"
KEDA_SCHEMAS = {
    "ScaledObject": "keda-scaledobject.schema.json",
    "TriggerAuthentication": "keda-triggerauthentication.schema.json",
}
MEASURED_PEAK_RSS_MIB = 92  # docs/performance.md: 86.5-91.1 MB per process


def documents() -> Iterator[tuple[str, dict[str, Any]]]:
    for path in sorted(K8S.rglob("*.yaml")):
        if path.name == "kustomization.yaml":  # kustomize's own file, not a Kubernetes object
            continue
        for number, document in enumerate(yaml.safe_load_all(path.read_text("utf-8"))):
            if document is not None:
                yield f"{path.relative_to(K8S)}#{number}", document


DOCUMENTS = dict(documents())


def only(kind: str, name: str) -> dict[str, Any]:
    found = [d for d in DOCUMENTS.values() if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def validate(document: dict[str, Any]) -> list[str]:
    """What is wrong with `document` ([] when nothing)."""
    schema_file = KEDA_SCHEMAS.get(document.get("kind", ""))
    if document.get("apiVersion", "").startswith("keda.sh/") and schema_file:
        schema = json.loads((SCHEMAS / schema_file).read_text("utf-8"))
        return [
            f"{e.instance_path}: {e.message}"
            for e in jsonschema_rs.validator_for(schema).iter_errors(document)
        ]
    try:
        kubernetes_validate.validate(document, KUBERNETES, strict=True)
    except kubernetes_validate.ValidationError as exc:
        return [f"{'.'.join(str(p) for p in exc.path)}: {exc.message}"]
    return []


def config() -> dict[str, str]:
    data: dict[str, str] = only("ConfigMap", "batchops")["data"]
    return data


def container(deployment: str) -> dict[str, Any]:
    [found] = only("Deployment", deployment)["spec"]["template"]["spec"]["containers"]
    return dict(found)


class TestSchemas:
    @pytest.mark.parametrize("where", sorted(DOCUMENTS))
    def test_every_object_is_valid(self, where: str) -> None:
        assert validate(DOCUMENTS[where]) == []

    @pytest.mark.parametrize(
        ("kind", "name", "breakage"),
        [
            ("Deployment", "batchops-consumer", {"spec": {"replica": 2}}),
            ("PodDisruptionBudget", "batchops-api", {"spec": {"minAvailable": [1]}}),
            ("ScaledObject", "batchops-consumer", {"spec": {"maxReplicas": 20}}),
            ("TriggerAuthentication", "batchops-rabbitmq", {"spec": {"secretRef": []}}),
        ],
    )
    def test_a_broken_object_is_refused(
        self, kind: str, name: str, breakage: dict[str, Any]
    ) -> None:
        broken = merge(only(kind, name), breakage)
        assert validate(broken) != [], f"a {kind} with {breakage} passed validation"

    def test_a_rabbitmq_trigger_needs_the_queue_and_a_numeric_target(self) -> None:
        scaled = only("ScaledObject", "batchops-consumer")
        trigger = dict(scaled["spec"]["triggers"][0])
        trigger["metadata"] = {**trigger["metadata"], "value": "sixteen"}
        broken = merge(scaled, {"spec": {"triggers": [trigger]}})
        assert validate(broken) != []

    def test_the_kustomization_lists_files_that_exist(self) -> None:
        kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text("utf-8"))
        for resource in kustomization["resources"]:
            assert (K8S / resource).is_file(), resource


class TestTheManifestsMatchBatchops:
    def test_every_setting_in_the_config_map_is_a_batchops_setting(self) -> None:
        known = {f"BATCHOPS_{name.upper()}" for name in Settings.model_fields}
        assert set(config()) <= known, set(config()) - known
        Settings.model_validate(
            {k.removeprefix("BATCHOPS_").lower(): v for k, v in config().items()}
        )

    @pytest.mark.parametrize(
        ("deployment", "command"), [("batchops-consumer", "consume"), ("batchops-api", "api")]
    )
    def test_each_deployment_runs_its_command_with_the_urls_from_the_secret(
        self, deployment: str, command: str
    ) -> None:
        found = container(deployment)
        args = build_parser().parse_args(found["args"])
        assert found["args"] == [command]
        assert hasattr(args, "command")
        from_secret = {e["name"]: e["valueFrom"]["secretKeyRef"]["key"] for e in found["env"]}
        assert from_secret == {
            "BATCHOPS_AMQP_URL": "amqp-url",
            "BATCHOPS_DATABASE_URL": "database-url",
        }
        assert found["envFrom"] == [{"configMapRef": {"name": "batchops"}}]

    def test_the_consumer_probes_ask_its_metrics_port(self) -> None:
        found = container("batchops-consumer")
        [port] = found["ports"]
        assert port["containerPort"] == int(config()["BATCHOPS_METRICS_PORT"])
        assert found["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": port["name"]}
        assert found["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": port["name"]}

    def test_the_api_probes_and_service_use_its_http_port(self) -> None:
        found = container("batchops-api")
        [port] = found["ports"]
        assert port["containerPort"] == int(config()["BATCHOPS_HTTP_PORT"])
        assert found["readinessProbe"]["httpGet"]["path"] == "/readyz"
        service = only("Service", "batchops-api")
        assert service["spec"]["ports"][0]["targetPort"] == port["name"]
        assert service["spec"]["selector"].items() <= pod_labels("batchops-api").items()

    def test_the_grace_period_covers_the_shutdown_timeout(self) -> None:
        spec = only("Deployment", "batchops-consumer")["spec"]["template"]["spec"]
        shutdown = float(config()["BATCHOPS_SHUTDOWN_TIMEOUT_SECONDS"])
        assert spec["terminationGracePeriodSeconds"] >= shutdown + 10

    @pytest.mark.parametrize("deployment", ["batchops-consumer", "batchops-api"])
    def test_memory_covers_the_measured_peak(self, deployment: str) -> None:
        resources = container(deployment)["resources"]
        request = mebibytes(resources["requests"]["memory"])
        assert MEASURED_PEAK_RSS_MIB <= request <= mebibytes(resources["limits"]["memory"])

    @pytest.mark.parametrize("budget", ["batchops-consumer", "batchops-api"])
    def test_each_disruption_budget_selects_its_pods(self, budget: str) -> None:
        selector = only("PodDisruptionBudget", budget)["spec"]["selector"]["matchLabels"]
        assert selector.items() <= pod_labels(budget).items()

    def test_keda_scales_the_consumers_on_the_work_queue(self) -> None:
        spec = only("ScaledObject", "batchops-consumer")["spec"]
        assert spec["scaleTargetRef"]["name"] == "batchops-consumer"
        [trigger] = spec["triggers"]
        assert trigger["metadata"]["queueName"] == f"{config()['BATCHOPS_NAMESPACE']}.requests"
        auth = only("TriggerAuthentication", trigger["authenticationRef"]["name"])
        assert auth["spec"]["secretTargetRef"][0]["name"] == "batchops"

    def test_the_hpa_alternative_scales_the_consumers(self) -> None:
        hpa = only("HorizontalPodAutoscaler", "batchops-consumer")
        assert hpa["spec"]["scaleTargetRef"] == {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": "batchops-consumer",
        }

    def test_the_migration_job_upgrades_the_database(self) -> None:
        [found] = only("Job", "batchops-migrate")["spec"]["template"]["spec"]["containers"]
        assert found["args"] == ["db", "upgrade"]
        assert hasattr(build_parser().parse_args(found["args"]), "command")

    def test_the_example_secret_has_every_key_the_manifests_read(self) -> None:
        secret = only("Secret", "batchops")
        assert set(secret["stringData"]) == {"amqp-url", "database-url", "keda-rabbitmq-host"}
        settings = Settings(
            amqp_url=secret["stringData"]["amqp-url"],
            database_url=secret["stringData"]["database-url"],
        )
        assert settings.amqp_url.count("amqp://") == 3


def pod_labels(deployment: str) -> dict[str, str]:
    labels: dict[str, str] = only("Deployment", deployment)["spec"]["template"]["metadata"][
        "labels"
    ]
    return labels


def mebibytes(quantity: str) -> float:
    units = {"Mi": 1.0, "Gi": 1024.0, "M": 1e6 / 2**20, "G": 1e9 / 2**20}
    for suffix, factor in units.items():
        if quantity.endswith(suffix):
            return float(quantity.removesuffix(suffix)) * factor
    raise ValueError(f"unexpected memory quantity {quantity!r}")


def merge(document: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """A deep copy of `document` with `changes` merged into it."""
    merged: dict[str, Any] = json.loads(json.dumps(document))
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged
