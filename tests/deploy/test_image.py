"""The container image (``Dockerfile``) and deploy/compose.yaml.

Fast checks (always run): the Dockerfile's build context and arguments, compose.yaml's services and their settings
(loaded into DataPulse's `Settings`), and compose's nginx configuration against the deploy/nginx recipe.

The real thing (opt-in, ``DATAPULSE_IMAGE_TESTS=1``; 1-2 minutes, see tests/support/image.py): the image is
built with podman on a Debian base that has only ``python3`` and ``python3-venv``, and run with buildah: the
packages in it are exactly uv.lock's, it runs as uid 10001, ``datapulse serve`` configured only from the environment
answers ``/health`` and a tool call with its token from the host, and its HEALTHCHECK passes against it.
"""

from __future__ import annotations

import fnmatch
import json
import re
import subprocess
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import anyio
import httpx2
import psutil  # type: ignore[import-untyped]
import pytest
import yaml  # type: ignore[import-untyped]
from anyio.abc import Process
from packaging.markers import Marker
from packaging.utils import canonicalize_name

from datapulse.config import Settings
from tests.deploy.test_kubernetes import setting_env_names, settings_from
from tests.support.image import (
    DOCKERFILE,
    INSTALLED_SCRIPT,
    MARKER_ENVIRONMENT_SCRIPT,
    REPO_ROOT,
    BuiltImage,
    Container,
    build_image,
    image_tests_skip_reason,
    locked_requirements,
    machine_package_site,
    make_container,
)
from tests.support.mcp_http import legacy_call, legacy_initialize
from tests.support.nginx import RECIPE
from tests.support.polling import eventually
from tests.support.redis_server import free_port

COMPOSE: Final = REPO_ROOT / "deploy" / "compose.yaml"
COMPOSE_NGINX: Final = REPO_ROOT / "deploy" / "compose.nginx.conf"
DOCKERIGNORE: Final = REPO_ROOT / ".dockerignore"
UID: Final = 10001
TOKEN: Final = "image-test-token-0123456789"
STARTUP_TIMEOUT_S: Final = 60.0
STOP_TIMEOUT_S: Final = 15.0

IMAGE_SKIP: Final = image_tests_skip_reason()
needs_image: Final = pytest.mark.skipif(IMAGE_SKIP is not None, reason=IMAGE_SKIP or "")

_TAG: Final = re.compile(r"#\s*@(?P<tag>[a-z]+)\s*$")
_INTERPOLATION: Final = re.compile(r"\$\{(?P<name>[A-Z0-9_]+)(?:(?P<op>:[?-])(?P<arg>[^}]*))?\}")


# --- Dockerfile and build context (fast) ---------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of every instruction, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", DOCKERFILE.read_text(encoding="utf-8"))
    out = []
    for line in joined.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            keyword, _, rest = stripped.partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


def sent_to_builder(path: str) -> bool:
    """Whether ``path`` (relative to the context) passes .dockerignore: Docker's rule, the last matching pattern
    decides (``!`` re-includes), a pattern also matching everything under a directory it matches."""
    included = True
    parts = path.split("/")
    for raw in DOCKERIGNORE.read_text(encoding="utf-8").splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negated = pattern.startswith("!")
        pattern = pattern.removeprefix("!").rstrip("/")
        prefixes = ["/".join(parts[: index + 1]) for index in range(len(parts))]
        if pattern.startswith("**/"):
            hit = any(fnmatch.fnmatchcase(part, pattern[3:]) for part in parts)
        else:
            hit = any(
                fnmatch.fnmatchcase(prefix, pattern) and prefix.count("/") == pattern.count("/") for prefix in prefixes
            )
        if hit:
            included = negated
    return included


def test_the_dockerfile_defaults_to_the_official_slim_python_and_takes_the_base_and_index_as_build_arguments() -> None:
    instructions = dockerfile_instructions()
    assert instructions[0] == ("ARG", "BASE=python:3.12-slim")
    assert [rest for keyword, rest in instructions if keyword == "FROM"] == ["${BASE} AS build", "${BASE} AS runtime"]
    assert ("ARG", 'INDEX_URL=""') in instructions
    text = DOCKERFILE.read_text(encoding="utf-8")
    # Nothing of this machine in it: no site index, no certificate path, no hard-coded interpreter.
    for machine_specific in ("/etc/ssl", "pip.conf =", "/usr/bin/python", "/usr/local/bin/python", "pypi.org"):
        assert machine_specific not in "\n".join(rest for _, rest in instructions), machine_specific
    assert "--require-hashes" in text
    assert "uv export" in text
    assert "--frozen" in text


def test_what_the_dockerfile_copies_passes_dockerignore_and_the_rest_of_the_checkout_does_not() -> None:
    copied = [
        source
        for keyword, rest in dockerfile_instructions()
        if keyword == "COPY" and "--from=" not in rest
        for source in rest.split()[:-1]
    ]
    assert copied == ["scripts/lock/uv.txt", "pyproject.toml", "uv.lock", "README.md", "src"]
    for source in copied:
        assert sent_to_builder(source), source
    assert sent_to_builder("src/datapulse/cli.py")
    for kept_out in (
        ".git/config",
        ".venv/bin/python",
        ".tools/uv/bin/uv",
        "tests/interop/js/node_modules/x/index.js",
        "src/datapulse/__pycache__/cli.cpython-311.pyc",
        "deploy/.env",
        ".env",
        "bench/out/result.json",
        "scripts/install.sh",
    ):
        assert not sent_to_builder(kept_out), kept_out


# --- compose.yaml (fast) -------------------------------------------------------------------------------------------


def compose() -> dict[str, Any]:
    document = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(document, dict)
    return document


def interpolate(value: str, dotenv: dict[str, str]) -> str:
    """Compose's ``${NAME}``, ``${NAME:-default}`` and ``${NAME:?error}`` against ``dotenv``.

    Raises:
        KeyError: a ``:?`` variable is missing (compose would refuse to start, with its message).
    """

    def one(match: re.Match[str]) -> str:
        name, op, arg = match["name"], match["op"], match["arg"]
        if dotenv.get(name):
            return dotenv[name]
        if op == ":?":
            raise KeyError(f"{name}: {arg}")
        return arg if op == ":-" else ""

    return _INTERPOLATION.sub(one, value)


DOTENV: Final = {
    "DATAPULSE_TOKEN": "compose-token-" + "a" * 32,
    "DATAPULSE_REQUEST_STATE_KEYS": "b" * 64,
    "REDIS_PASSWORD": "c" * 64,
}
"""deploy/.env as compose.yaml's comment tells the user to write it."""


def test_compose_runs_redis_with_an_append_only_file_two_datapulse_instances_from_the_dockerfile_and_nginx() -> None:
    services = compose()["services"]
    assert set(services) == {"redis", "datapulse-1", "datapulse-2", "nginx"}
    redis_command = services["redis"]["command"]
    assert redis_command[redis_command.index("--appendonly") + 1] == "yes"
    assert any(volume.endswith(":/data") for volume in services["redis"]["volumes"])
    for name in ("datapulse-1", "datapulse-2"):
        service = services[name]
        assert service["build"] == {"context": "..", "dockerfile": "Dockerfile"}
        assert (COMPOSE.parent / service["build"]["context"] / service["build"]["dockerfile"]).resolve() == DOCKERFILE
        assert "ports" not in service  # reached through nginx only
        assert service["depends_on"]["redis"]["condition"] == "service_healthy"
    nginx = services["nginx"]
    assert nginx["volumes"] == ["./compose.nginx.conf:/etc/nginx/conf.d/default.conf:ro"]
    assert set(nginx["depends_on"]) == {"datapulse-1", "datapulse-2"}


def test_each_compose_instance_environment_loads_as_datapulse_settings_in_cluster_mode_with_shared_keys(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    services = compose()["services"]
    known = setting_env_names()
    subnet = interpolate(compose()["networks"]["datapulse"]["ipam"]["config"][0]["subnet"], DOTENV)
    loaded = []
    for name in ("datapulse-1", "datapulse-2"):
        environment = {key: interpolate(str(value), DOTENV) for key, value in services[name]["environment"].items()}
        assert set(environment) <= known, set(environment) - known
        settings = settings_from({**environment, "DATAPULSE_HOST": "0.0.0.0"}, monkeypatch)  # the image's ENV
        assert settings.cluster
        assert settings.auth_enabled
        assert settings.trusted_proxies == [subnet]  # compose's network, where nginx connects from
        loaded.append(settings)
    first, second = loaded
    assert first.request_state_keys is not None
    assert second.request_state_keys is not None
    assert first.request_state_keys.get_secret_value() == second.request_state_keys.get_secret_value()
    assert first.redis_url == second.redis_url


def test_compose_refuses_to_start_without_the_token_keys_and_redis_password_of_deploy_env() -> None:
    services = compose()["services"]
    everything = " ".join([*map(str, services["datapulse-1"]["environment"].values()), *services["redis"]["command"]])
    for missing in DOTENV:
        partial = {name: value for name, value in DOTENV.items() if name != missing}
        with pytest.raises(KeyError, match=missing):
            interpolate(everything, partial)


def test_the_compose_nginx_configuration_is_the_recipe_with_only_its_tagged_lines_changed() -> None:
    recipe = RECIPE.read_text(encoding="utf-8").splitlines()
    ours = COMPOSE_NGINX.read_text(encoding="utf-8").splitlines()
    header = ours.index(recipe[0])
    body = ours[header:]
    assert len(body) == len(recipe)
    changed = [(theirs, mine) for theirs, mine in zip(recipe, body, strict=True) if theirs != mine]
    assert changed, "compose needs its own upstreams"
    for theirs, mine in changed:
        tag_theirs, tag_mine = _TAG.search(theirs), _TAG.search(mine)
        assert tag_theirs is not None, theirs
        assert tag_mine is not None, mine
        assert tag_theirs["tag"] == tag_mine["tag"]
    upstreams = [line.split()[1].rstrip(";") for line in body if _TAG.search(line) and "@upstream" in line]
    assert upstreams == ["datapulse-1:8000", "datapulse-2:8000"]
    assert int(Settings.model_fields["port"].default) == 8000  # the port the image's instances listen on


# --- the image, built and run (slow, opt-in) ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def image() -> Iterator[BuiltImage]:
    built = build_image(machine_package_site())
    print(f"\nimage {built.reference}: base {built.base_s:.1f} s, build {built.build_s:.1f} s")
    try:
        yield built
    finally:
        built.remove()


@pytest.fixture(scope="module")
def container(image: BuiltImage) -> Iterator[Container]:
    made = make_container(image)
    try:
        yield made
    finally:
        made.remove()


@needs_image
def test_the_image_keeps_its_healthcheck_runs_datapulse_serve_as_uid_10001_on_every_interface_and_bakes_in_no_secret(
    image: BuiltImage,
) -> None:
    document = image.inspect()
    assert document["ManifestType"] == "application/vnd.docker.distribution.manifest.v2+json"
    health = document["Healthcheck"]
    assert health["Test"][:2] == ["CMD", "/opt/datapulse/venv/bin/python"]
    assert "/health" in health["Test"][-1]
    config = document["Config"]
    assert config["User"] == f"{UID}:{UID}"
    assert config["Entrypoint"] == ["datapulse"]
    assert config["Cmd"] == ["serve"]
    assert "8000/tcp" in config["ExposedPorts"]
    env = dict(item.split("=", 1) for item in config["Env"])
    assert env["DATAPULSE_HOST"] == "0.0.0.0"
    assert env["PATH"].startswith("/opt/datapulse/venv/bin:")
    secret_like = re.compile(r"TOKEN|KEY|SECRET|PASSWORD|REDIS_URL|JWT")
    assert not [name for name in env if secret_like.search(name)]


@needs_image
def test_the_image_holds_exactly_the_locked_versions_and_datapulse_itself_not_editable(container: Container) -> None:
    environment = json.loads(container.run(["python", "-c", MARKER_ENVIRONMENT_SCRIPT]))
    expected = {
        canonicalize_name(requirement.name): requirement.version
        for requirement in locked_requirements()
        if requirement.marker is None or Marker(requirement.marker).evaluate(environment)
    }
    installed = {
        canonicalize_name(name): version
        for name, version in json.loads(container.run(["python", "-c", INSTALLED_SCRIPT]))
    }
    assert installed.pop(canonicalize_name("datapulse")) == "0.1.0"
    assert installed == expected
    # Installed from a wheel: the package is inside the venv, not a link back to a source tree.
    location = container.run(["python", "-c", "import datapulse; print(datapulse.__file__)"]).strip()
    assert location.startswith("/opt/datapulse/venv/lib/"), location
    assert container.run(["id", "-u"]).strip() == str(UID)


@dataclass(frozen=True)
class Serving:
    process: Process
    url: str
    log: Path

    def client(self, token: str | None = TOKEN) -> httpx2.AsyncClient:
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        return httpx2.AsyncClient(base_url=self.url, headers=headers, timeout=10.0)

    def uids(self) -> set[int]:
        """The real uids of the DataPulse processes ``buildah run`` started (the venv's Python)."""
        children = psutil.Process(self.process.pid).children(recursive=True)
        return {child.uids().real for child in children if "/opt/datapulse/venv/" in " ".join(child.cmdline())}


async def tail(log: Path) -> str:
    return (await anyio.Path(log).read_text(errors="replace"))[-4000:]


@asynccontextmanager
async def serving(container: Container, env: dict[str, str], log: Path) -> AsyncIterator[Serving]:
    """``datapulse serve`` (the image's CMD) in ``container`` on the host's network, settings from ``env`` only;
    yields once ``/health`` answers 200 from the host (bounded). Killed and waited for (bounded) on exit."""
    port = int(env["DATAPULSE_PORT"])
    with log.open("wb") as output:
        process = await anyio.open_process(
            container.argv(["datapulse", "serve"], env), stdin=subprocess.DEVNULL, stdout=output, stderr=output
        )
        try:
            running = Serving(process, f"http://127.0.0.1:{port}", log)

            async def healthy() -> bool:
                if process.returncode is not None:
                    raise AssertionError(f"datapulse serve exited {process.returncode}:\n{await tail(log)}")
                async with running.client(token=None) as client:
                    try:
                        return (await client.get("/health")).status_code == 200
                    except httpx2.TransportError:
                        return False

            try:
                await eventually(healthy, timeout_s=STARTUP_TIMEOUT_S)
            except TimeoutError:
                raise AssertionError(f"no /health within {STARTUP_TIMEOUT_S} s:\n{await tail(log)}") from None
            yield running
        finally:
            process.terminate()
            with anyio.move_on_after(STOP_TIMEOUT_S, shield=True):
                await process.wait()
            if process.returncode is None:
                process.kill()
                with anyio.move_on_after(STOP_TIMEOUT_S, shield=True):
                    await process.wait()


@needs_image
@pytest.mark.anyio
async def test_datapulse_serve_in_the_image_answers_health_and_a_tool_call_with_the_token_from_the_environment(
    container: Container, tmp_path: Path
) -> None:
    env = {"DATAPULSE_TOKEN": TOKEN, "DATAPULSE_PORT": str(free_port())}
    async with serving(container, env, tmp_path / "serve.log") as server:
        assert server.uids() == {UID}
        async with server.client(token=None) as anonymous:
            health = await anonymous.get("/health")
            assert health.json()["status"] == "ok"
            assert (await anonymous.post("/mcp", content="{}")).status_code == 401
        async with server.client() as client:
            session = await legacy_initialize(client)
            answer = await legacy_call(
                client, session, "tools/call", {"name": "echo", "arguments": {"message": "héllo"}}
            )
            assert answer.status_code == 200, answer.text
            assert answer.json()["result"]["content"] == [{"type": "text", "text": "héllo"}]
    assert TOKEN not in await anyio.Path(tmp_path / "serve.log").read_text(errors="replace")


@needs_image
@pytest.mark.anyio
async def test_the_image_healthcheck_passes_on_datapulse_port_with_the_first_allowed_host_and_fails_on_a_dead_port(
    image: BuiltImage, container: Container, tmp_path: Path
) -> None:
    check = image.inspect()["Healthcheck"]["Test"][1:]
    port = str(free_port())
    env = {"DATAPULSE_TOKEN": TOKEN, "DATAPULSE_PORT": port, "DATAPULSE_ALLOWED_HOSTS": "mcp.example.test,127.0.0.1:*"}
    async with serving(container, env, tmp_path / "serve.log") as server:
        async with server.client(token=None) as anonymous:  # the allowed hosts are in force: a stranger gets 421
            assert (await anonymous.get("/health", headers={"Host": "other.example.test"})).status_code == 421
        assert await anyio.to_thread.run_sync(container.exit_status, check, env) == 0
        assert (
            await anyio.to_thread.run_sync(container.exit_status, check, {**env, "DATAPULSE_PORT": str(free_port())})
            != 0
        )
