"""deploy/kubernetes: every manifest is valid for Kubernetes (kubernetes-validate's bundled schemas, strict, offline),
and the manifests agree with DataPulse's own settings and with each other: probes on /ready and /health, a grace
period that outlasts the preStop sleep and the whole drain, non-root containers, environment variables that
DataPulse reads, a Service and a PodDisruptionBudget that select the DataPulse pods."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]
from kubernetes_validate.utils import (  # type: ignore[import-untyped]
    SchemaNotFoundError,
    ValidationError,
    validate,
)
from pydantic import AliasChoices

from datapulse.app import create_app, runtime_of
from datapulse.config import Settings
from datapulse.server import uvicorn_config

Manifest = dict[str, Any]

REPO = Path(__file__).resolve().parents[2]
MANIFESTS = REPO / "deploy" / "kubernetes"
EXAMPLE_SECRET = "secret.example.yaml"
KUSTOMIZATION = "kustomization.yaml"  # kustomize's own file, not a Kubernetes API object
KUBERNETES_VERSIONS = ("1.30.0", "1.37.0")  # the oldest we claim, and the newest kubernetes-validate bundles
SERVER_LABELS = {"app.kubernetes.io/name": "datapulse", "app.kubernetes.io/component": "server"}


def load_yaml(path: Path) -> list[Manifest]:
    """The non-empty YAML documents of ``path``."""
    documents: list[Any] = list(yaml.safe_load_all(path.read_text()))
    assert all(isinstance(document, dict) for document in documents if document is not None), path.name
    return [document for document in documents if document]


def manifest_files() -> list[Path]:
    """Every Kubernetes manifest of deploy/kubernetes (the kustomization excepted)."""
    return sorted(path for path in MANIFESTS.glob("*.yaml") if path.name != KUSTOMIZATION)


def resources() -> dict[tuple[str, str], Manifest]:
    """(kind, name) -> the resource, over every manifest file."""
    found: dict[tuple[str, str], Manifest] = {}
    for path in manifest_files():
        for document in load_yaml(path):
            key = (document["kind"], document["metadata"]["name"])
            assert key not in found, f"{key} defined twice"
            found[key] = document
    return found


def resource(kind: str, name: str) -> Manifest:
    found = resources()
    assert (kind, name) in found, f"no {kind} {name!r} in {MANIFESTS.relative_to(REPO)}"
    return found[(kind, name)]


def pod_spec(name: str) -> Manifest:
    spec: Manifest = resource("Deployment", name)["spec"]["template"]["spec"]
    return spec


def datapulse_container() -> Manifest:
    containers: list[Manifest] = pod_spec("datapulse")["containers"]
    assert [container["name"] for container in containers] == ["datapulse"]
    return containers[0]


def example_secret_values() -> dict[str, str]:
    secret = resource("Secret", "datapulse")
    values: dict[str, str] = secret["stringData"]
    return values


def setting_env_names() -> set[str]:
    """Every environment variable DataPulse's settings read: DATAPULSE_<FIELD>, or a field's aliases."""
    names: set[str] = set()
    for field_name, field in Settings.model_fields.items():
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            names.update(choice for choice in alias.choices if isinstance(choice, str) and choice.isupper())
        else:
            names.add(f"DATAPULSE_{field_name.upper()}")
    return names


def resolved_env(container: Manifest) -> dict[str, str]:
    """The container's environment as the kubelet builds it: literal values, keys of the example Secret, and
    ``$(NAME)`` references to variables defined earlier."""
    env: dict[str, str] = {}
    secret = example_secret_values()
    for variable in container.get("env", []):
        if "value" in variable:
            env[variable["name"]] = re.sub(
                r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m.group(1), m.group(0)), variable["value"]
            )
        else:
            reference = variable["valueFrom"]["secretKeyRef"]
            assert reference["name"] == "datapulse", variable
            assert reference["key"] in secret, f"{variable['name']}: the example Secret has no {reference['key']!r}"
            env[variable["name"]] = secret[reference["key"]]
    return env


def settings_from(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The Settings DataPulse would load in a process whose environment is exactly ``env``."""
    for name in setting_env_names():
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return Settings()


def pre_stop_sleep_s(container: Manifest) -> float:
    """Seconds the preStop hook sleeps: ``exec: sleep N`` or the built-in ``sleep: {seconds: N}``."""
    hook: Manifest = container["lifecycle"]["preStop"]
    if "sleep" in hook:
        return float(hook["sleep"]["seconds"])
    command: list[str] = hook["exec"]["command"]
    assert len(command) == 2, command
    assert command[0] == "sleep", command
    return float(command[1])


def container_port(container: Manifest, target: int | str) -> int:
    """The container port a Service's targetPort (a number or a port name) reaches."""
    for port in container["ports"]:
        if target in (port["containerPort"], port.get("name")):
            number: int = port["containerPort"]
            return number
    raise AssertionError(f"targetPort {target!r} is not a port of container {container['name']!r}")


def labels_match(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS, ids=lambda version: "kubernetes_" + version[:4])
def test_every_manifest_is_valid_against_the_strict_schemas_of(version: str) -> None:
    assert len(manifest_files()) >= 6
    problems: list[str] = []
    for path in manifest_files():
        for document in load_yaml(path):
            where = f"{path.name} {document.get('kind')}/{document.get('metadata', {}).get('name')}"
            try:
                validate(document, version, strict=True)
            except ValidationError as exc:
                problems.append(f"{where}: {'.'.join(str(item) for item in exc.path)}: {exc.message}")
            except SchemaNotFoundError as exc:
                problems.append(f"{where}: {exc.message}")
    assert not problems, "\n".join(problems)


def test_the_strict_validation_rejects_a_misspelt_field_and_a_wrong_type() -> None:
    deployment = resource("Deployment", "datapulse")
    misspelt = copy.deepcopy(deployment)
    misspelt["spec"]["template"]["spec"]["containers"][0]["readinessProbes"] = {}
    with pytest.raises(ValidationError):
        validate(misspelt, KUBERNETES_VERSIONS[-1], strict=True)
    wrong_type = copy.deepcopy(deployment)
    wrong_type["spec"]["replicas"] = "two"
    with pytest.raises(ValidationError):
        validate(wrong_type, KUBERNETES_VERSIONS[-1], strict=True)


def test_the_kustomization_lists_every_manifest_except_the_example_secret() -> None:
    (kustomization,) = load_yaml(MANIFESTS / KUSTOMIZATION)
    assert kustomization["kind"] == "Kustomization"
    listed = kustomization["resources"]
    assert len(listed) == len(set(listed))
    assert set(listed) == {path.name for path in manifest_files()} - {EXAMPLE_SECRET}
    assert all((MANIFESTS / name).is_file() for name in listed)


def test_the_example_secret_holds_only_obvious_placeholders() -> None:
    (secret,) = load_yaml(MANIFESTS / EXAMPLE_SECRET)
    assert secret["kind"] == "Secret"
    assert "data" not in secret  # base64 would hide whether a value is a placeholder
    values: dict[str, str] = secret["stringData"]
    assert values
    assert all("REPLACE-ME" in value for value in values.values()), values


def test_the_readiness_probe_asks_ready_and_the_liveness_and_startup_probes_ask_health() -> None:
    container = datapulse_container()
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    if "startupProbe" in container:
        assert container["startupProbe"]["httpGet"]["path"] == "/health"
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        if probe in container:
            port = container[probe]["httpGet"]["port"]
            assert container_port(container, port) == container_port(container, "http"), probe


def test_the_readiness_probe_waits_longer_than_datapulse_waits_for_redis(monkeypatch: pytest.MonkeyPatch) -> None:
    container = datapulse_container()
    settings = settings_from(resolved_env(container), monkeypatch)
    # /ready answers 503 itself once a Redis PING has taken redis_timeout_s; the probe must not give up first.
    assert container["readinessProbe"]["timeoutSeconds"] > settings.redis_timeout_s


def test_the_grace_period_outlasts_the_pre_stop_sleep_and_the_whole_drain(monkeypatch: pytest.MonkeyPatch) -> None:
    container = datapulse_container()
    settings = settings_from(resolved_env(container), monkeypatch)
    drain_s = settings.graceful_shutdown_timeout_s  # DataPulse's drain (datapulse.app.shutdown)
    connections_s = uvicorn_config(None, settings).timeout_graceful_shutdown  # then uvicorn waits for connections
    assert connections_s is not None
    sleep_s = pre_stop_sleep_s(container)
    assert sleep_s >= 1
    grace_s = pod_spec("datapulse")["terminationGracePeriodSeconds"]
    assert grace_s > sleep_s + drain_s + connections_s, (grace_s, sleep_s, drain_s, connections_s)
    assert grace_s > sleep_s + Settings.model_fields["graceful_shutdown_timeout_s"].default


def test_every_container_runs_as_non_root_without_privileges_on_a_read_only_root_with_resource_bounds() -> None:
    deployments = [document for (kind, _), document in resources().items() if kind == "Deployment"]
    assert {deployment["metadata"]["name"] for deployment in deployments} == {"datapulse", "datapulse-redis"}
    for deployment in deployments:
        spec = deployment["spec"]["template"]["spec"]
        for container in spec["containers"]:
            where = f"{deployment['metadata']['name']}/{container['name']}"
            context = container["securityContext"]
            assert context.get("runAsNonRoot", spec.get("securityContext", {}).get("runAsNonRoot")) is True, where
            assert context["allowPrivilegeEscalation"] is False, where
            assert context["readOnlyRootFilesystem"] is True, where
            assert context["capabilities"]["drop"] == ["ALL"], where
            assert "add" not in context["capabilities"], where
            for bound in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(container["resources"][bound]), (where, bound)


def test_datapulse_uses_the_placeholder_image_pulled_only_if_not_present() -> None:
    container = datapulse_container()
    assert container["image"] == "datapulse:latest"
    assert container["imagePullPolicy"] == "IfNotPresent"
    (kustomization,) = load_yaml(MANIFESTS / KUSTOMIZATION)
    assert {"name": "datapulse", "newName": "datapulse", "newTag": "latest"} in kustomization["images"]


def test_every_environment_variable_of_datapulse_is_a_setting_an_alias_or_spliced_into_one() -> None:
    container = datapulse_container()
    known = setting_env_names()
    assert {"DATAPULSE_REDIS_URL", "REDIS_URL", "DATAPULSE_TOKEN", "LOCAL_BEARER_TOKEN"} <= known  # the derivation
    variables: list[Manifest] = container["env"]
    values = " ".join(variable.get("value", "") for variable in variables)
    for variable in variables:
        name = variable["name"]
        spliced = f"$({name})" in values
        assert name in known or (spliced and not name.startswith("DATAPULSE_")), f"{name}: DataPulse never reads it"


def test_the_deployment_env_with_the_example_secret_builds_a_cluster_mode_app_on_all_interfaces(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    container = datapulse_container()
    settings = settings_from(resolved_env(container), monkeypatch)
    assert settings.host == "0.0.0.0"
    assert not settings.is_loopback
    assert settings.auth_enabled  # else `datapulse serve` generates a random token per pod
    assert not settings.insecure_no_auth
    assert settings.cluster
    assert settings.request_state_keys is not None
    assert settings.port == container_port(container, "http")
    assert settings.workers == 1
    # The same checks `datapulse serve` makes at start: token list, request-state keys, Redis URL, audit sinks.
    runtime = runtime_of(create_app(settings))
    assert runtime.cluster is not None


def test_the_redis_url_reaches_the_redis_service_and_redis_keeps_an_append_only_file(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = settings_from(resolved_env(datapulse_container()), monkeypatch)
    assert settings.redis_url is not None
    url = settings.redis_url.get_secret_value()
    password = example_secret_values()["redis-password"]
    assert url.startswith(f"redis://:{password}@"), "DATAPULSE_REDIS_URL must carry the Secret's redis-password"
    shape = re.fullmatch(r"redis://:[^@]*@([^:/]+):(\d+)/\d+", url)
    assert shape is not None, "DATAPULSE_REDIS_URL should be redis://:PASSWORD@SERVICE:PORT/DB"
    host, port = shape.groups()
    service = resource("Service", host)
    (service_port,) = [entry for entry in service["spec"]["ports"] if entry["port"] == int(port)]
    redis_pod = resource("Deployment", "datapulse-redis")["spec"]["template"]
    assert labels_match(service["spec"]["selector"], redis_pod["metadata"]["labels"])
    (redis,) = redis_pod["spec"]["containers"]
    assert container_port(redis, service_port["targetPort"]) == 6379
    args: list[str] = redis["args"]
    assert args[args.index("--appendonly") + 1] == "yes"
    assert args[args.index("--requirepass") + 1] == "$(REDIS_PASSWORD)"
    assert resolved_env(redis)["REDIS_PASSWORD"] == password


def test_the_service_targets_the_container_port_of_the_datapulse_pods_without_sticky_sessions() -> None:
    service = resource("Service", "datapulse")
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"].get("sessionAffinity", "None") == "None"  # cluster mode: no sticky sessions needed
    pod_labels = resource("Deployment", "datapulse")["spec"]["template"]["metadata"]["labels"]
    redis_labels = resource("Deployment", "datapulse-redis")["spec"]["template"]["metadata"]["labels"]
    assert labels_match(service["spec"]["selector"], pod_labels)
    assert not labels_match(service["spec"]["selector"], redis_labels)
    (port,) = service["spec"]["ports"]
    assert port["port"] == 80
    assert container_port(datapulse_container(), port["targetPort"]) == 8000


def test_the_disruption_budget_keeps_one_of_the_datapulse_pods() -> None:
    budget = resource("PodDisruptionBudget", "datapulse")
    deployment = resource("Deployment", "datapulse")
    selector = budget["spec"]["selector"]["matchLabels"]
    assert selector == deployment["spec"]["selector"]["matchLabels"] == SERVER_LABELS
    assert labels_match(selector, deployment["spec"]["template"]["metadata"]["labels"])
    redis_labels = resource("Deployment", "datapulse-redis")["spec"]["template"]["metadata"]["labels"]
    assert not labels_match(selector, redis_labels)
    assert budget["spec"]["minAvailable"] == 1
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_service_links_are_off_because_a_service_named_datapulse_would_set_datapulse_port(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    injected: set[str] = set()
    for (kind, name), service in resources().items():
        if kind != "Service":
            continue
        prefix = name.upper().replace("-", "_")
        injected |= {f"{prefix}_SERVICE_HOST", f"{prefix}_SERVICE_PORT", f"{prefix}_PORT"}
        for port in service["spec"]["ports"]:
            injected.add(f"{prefix}_PORT_{port['port']}_{port.get('protocol', 'TCP')}")
    clashes = injected & setting_env_names()
    assert "DATAPULSE_PORT" in clashes
    with pytest.raises(ValueError, match="port"):  # what the kubelet's DATAPULSE_PORT=tcp://... would do
        settings_from({"DATAPULSE_PORT": "tcp://10.0.0.1:80"}, monkeypatch)
    assert pod_spec("datapulse")["enableServiceLinks"] is False
