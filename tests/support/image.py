"""The repository's container image (``Dockerfile``), built and run for real with podman and buildah.

No registry is needed: the base image is made from Debian packages with ``mmdebstrap`` (minbase, ``python3``,
``python3-venv``, ``ca-certificates``: the Debian flavour of base the Dockerfile supports besides the official
python:3.12-slim) and imported into podman. The base carries this machine's package-site configuration, as a site's
own base image would: its CA bundle (registries here are reached through the machine's certificate authority) and an
``/etc/pip.conf`` whose ``cert`` points at it, plus the machine's ``index-url`` when it has an http(s) one. The
Dockerfile itself stays generic: pip, inside the build, reads that pip.conf.

The base tarball is cached under ``$XDG_CACHE_HOME/datapulse-test/`` (``~/.cache``), keyed by everything that goes
into it (suite, packages, CA bundle, pip.conf): a change to any of them builds a new one. Delete the directory to
pick up newer Debian packages.

``podman run`` is not used: crun cannot start containers on hosts with cgroups v1/hybrid (as on our machines), so the
built image runs with ``buildah run --isolation chroot --network host`` on a working container made from it, which
honours the image's USER, ENV and WORKDIR.

Every external command runs under a timeout. Tests skip with `image_tests_skip_reason` (opt-in variable, missing
tools with the apt-get command that installs them, not root).
"""

from __future__ import annotations

import configparser
import hashlib
import json
import os
import re
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

REPO_ROOT: Final = Path(__file__).resolve().parents[2]
DOCKERFILE: Final = REPO_ROOT / "Dockerfile"
UV: Final = REPO_ROOT / ".tools" / "uv" / "bin" / "uv"
OPT_IN: Final = "DATAPULSE_IMAGE_TESTS"
TOOLS: Final = ("podman", "buildah", "mmdebstrap")
APT_INSTALL: Final = "apt-get install -y podman buildah mmdebstrap"

DEBIAN_SUITE: Final = "bookworm"
BASE_PACKAGES: Final = ("python3", "python3-venv", "ca-certificates")
CA_IN_BASE: Final = "/etc/ssl/certs/ca-certificates.crt"
DEFAULT_CA: Final = Path("/etc/ssl/certs/ca-certificates.crt")
RECIPE_VERSION: Final = 1
"""Bump when `make_base_tarball` changes in a way the key below does not see."""

MMDEBSTRAP_TIMEOUT_S: Final = 600.0
IMPORT_TIMEOUT_S: Final = 120.0
BUILD_TIMEOUT_S: Final = 1200.0
COMMAND_TIMEOUT_S: Final = 60.0
REMOVE_TIMEOUT_S: Final = 60.0


def image_tests_skip_reason() -> str | None:
    """Why the image tests cannot run here, or None when they can."""
    if os.environ.get(OPT_IN) != "1":
        return f"slow (builds the container image: 1-2 minutes): set {OPT_IN}=1 to run"
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        return f"{', '.join(missing)} not installed: {APT_INSTALL}"
    if os.geteuid() != 0:
        return "needs root (mmdebstrap, podman build --isolation=chroot and buildah run as used here)"
    if not UV.is_file():
        return f"{UV.relative_to(REPO_ROOT)} is missing: run scripts/install.sh (the test reads uv.lock with it)"
    return None


def run(argv: Sequence[str], *, timeout_s: float, env: Mapping[str, str] | None = None) -> str:
    """Run ``argv`` to completion under ``timeout_s``; its stdout.

    Raises:
        AssertionError: it failed or timed out (the message has the end of its output).
    """
    try:
        done = subprocess.run(
            list(argv),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            env=None if env is None else {**os.environ, **env},
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"{argv[0]} {argv[1]}: no result within {timeout_s:.0f} s") from exc
    if done.returncode != 0:
        raise AssertionError(
            f"{' '.join(argv[:2])} exited {done.returncode}:\n{done.stdout[-4000:]}{done.stderr[-4000:]}"
        )
    return done.stdout


# --- the machine's package site ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PackageSite:
    """How this machine reaches Python packages: the CA bundle pip trusts, and its index when it has its own."""

    ca_bundle: Path
    index_url: str | None

    def pip_conf(self) -> str:
        """The ``/etc/pip.conf`` of the base image: the CA bundle as copied into it, and the index."""
        lines = ["[global]", f"cert = {CA_IN_BASE}"]
        if self.index_url is not None:
            lines.append(f"index-url = {self.index_url}")
        return "\n".join(lines) + "\n"


def _pip_config_files() -> list[Path]:
    """pip's configuration files in the order it reads them (later wins): site-wide, then the user's, then
    PIP_CONFIG_FILE."""
    xdg_dirs = os.environ.get("XDG_CONFIG_DIRS") or "/etc/xdg"
    files = [Path(directory) / "pip" / "pip.conf" for directory in xdg_dirs.split(":") if directory]
    files.append(Path("/etc/pip.conf"))
    home = Path.home()
    files += [
        home / ".pip" / "pip.conf",
        Path(os.environ.get("XDG_CONFIG_HOME") or home / ".config") / "pip" / "pip.conf",
    ]
    if os.environ.get("PIP_CONFIG_FILE"):
        files.append(Path(os.environ["PIP_CONFIG_FILE"]))
    return files


def machine_package_site() -> PackageSite:
    """This machine's pip settings that a build inside a container can use: ``cert`` (else the system bundle) and an
    http(s) ``index-url`` (a ``file://`` index or ``find-links`` on this disk means nothing inside the build)."""
    values: dict[str, str] = {}
    for file in _pip_config_files():
        parser = configparser.ConfigParser(interpolation=None)
        try:
            parser.read(file, encoding="utf-8")
        except (OSError, configparser.Error):
            continue
        for section in ("global", "install"):
            if parser.has_section(section):
                values.update({key: value for key, value in parser.items(section) if key in ("cert", "index-url")})
    for key in ("cert", "index-url"):
        from_env = os.environ.get("PIP_" + key.upper().replace("-", "_"))
        if from_env:
            values[key] = from_env
    ca_bundle = Path(values.get("cert", str(DEFAULT_CA)))
    index_url = values.get("index-url")
    if index_url is not None and urlsplit(index_url).scheme not in ("http", "https"):
        index_url = None
    return PackageSite(ca_bundle=ca_bundle, index_url=index_url)


# --- the base image ------------------------------------------------------------------------------------------------


def base_key(site: PackageSite) -> str:
    """A digest of everything the base tarball is made of."""
    recipe = {
        "version": RECIPE_VERSION,
        "suite": DEBIAN_SUITE,
        "variant": "minbase",
        "packages": list(BASE_PACKAGES),
        "pip.conf": site.pip_conf(),
        "ca": hashlib.sha256(site.ca_bundle.read_bytes()).hexdigest(),
    }
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "datapulse-test"


def make_base_tarball(site: PackageSite) -> Path:
    """The base root filesystem as a tarball: from the cache, or made now with mmdebstrap (about 40 s). Tarballs of
    other keys are removed; a new one is written under a temporary name and renamed, so a concurrent or interrupted
    run never leaves a partial tarball under the final name."""
    directory = cache_dir()
    directory.mkdir(parents=True, exist_ok=True)
    tarball = directory / f"debian-python-{base_key(site)}.tar"
    if tarball.is_file():
        return tarball
    for stale in directory.glob("debian-python-*.tar"):
        stale.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="base-", dir=directory) as scratch:
        pip_conf = Path(scratch) / "pip.conf"
        pip_conf.write_text(site.pip_conf(), encoding="utf-8")
        partial = Path(scratch) / "base.tar"
        run(
            [
                "mmdebstrap",
                "--quiet",
                "--variant=minbase",
                f"--include={','.join(BASE_PACKAGES)}",
                # Special hooks (see mmdebstrap(1), HOOKS): copy a file from here to a path in the chroot, after
                # the packages are installed (ca-certificates' own bundle is replaced by the machine's).
                f"--customize-hook=upload {site.ca_bundle} {CA_IN_BASE}",
                f"--customize-hook=upload {pip_conf} /etc/pip.conf",
                DEBIAN_SUITE,
                str(partial),
            ],
            timeout_s=MMDEBSTRAP_TIMEOUT_S,
        )
        partial.replace(tarball)
    return tarball


def import_base(tarball: Path) -> str:
    """The base image in podman's store (imported once per key; kept, like the tarball, for the next run)."""
    reference = f"localhost/datapulse-test-base:{tarball.stem.removeprefix('debian-python-')}"
    exists = subprocess.run(
        ["podman", "image", "exists", reference], capture_output=True, timeout=COMMAND_TIMEOUT_S, check=False
    )
    if exists.returncode != 0:
        run(["podman", "import", "--quiet", str(tarball), reference], timeout_s=IMPORT_TIMEOUT_S)
    return reference


# --- the image and a container of it --------------------------------------------------------------------------------


@dataclass(frozen=True)
class BuiltImage:
    """An image built from the repository's Dockerfile, and how long each step took (seconds)."""

    reference: str
    base: str
    base_s: float
    build_s: float

    def inspect(self) -> dict[str, Any]:
        """``podman inspect`` of the image (Config, Healthcheck, ManifestType, ...)."""
        documents = json.loads(run(["podman", "image", "inspect", self.reference], timeout_s=COMMAND_TIMEOUT_S))
        assert isinstance(documents, list)
        assert len(documents) == 1
        document: dict[str, Any] = documents[0]
        return document

    def remove(self) -> None:
        subprocess.run(
            ["podman", "rmi", "--force", self.reference], capture_output=True, timeout=REMOVE_TIMEOUT_S, check=False
        )


def build_image(site: PackageSite) -> BuiltImage:
    """Build the Dockerfile on the Debian base (made or taken from the cache) under a fresh tag.

    ``--format docker``: the OCI image format has no HEALTHCHECK. ``--isolation chroot``: no OCI runtime needed.
    ``--network host``: the build's downloads use this machine's network and resolver. ``--pull never``: nothing
    comes from a registry. ``--layers=false``: every run builds (and downloads, hash-checked) from scratch and leaves
    no intermediate images behind.
    """
    started = time.monotonic()
    base = import_base(make_base_tarball(site))
    base_s = time.monotonic() - started
    reference = f"localhost/datapulse-test:{secrets.token_hex(4)}"
    started = time.monotonic()
    run(
        [
            "podman",
            "build",
            "--isolation=chroot",
            "--network=host",
            "--format=docker",
            "--pull=never",
            "--layers=false",
            "--build-arg",
            f"BASE={base}",
            "--tag",
            reference,
            "--file",
            str(DOCKERFILE),
            str(REPO_ROOT),
        ],
        timeout_s=BUILD_TIMEOUT_S,
    )
    return BuiltImage(reference=reference, base=base, base_s=base_s, build_s=time.monotonic() - started)


@dataclass(frozen=True)
class Container:
    """A buildah working container of an image: commands run in it as the image's USER, with its ENV and WORKDIR."""

    name: str

    def argv(self, command: Sequence[str], env: Mapping[str, str] | None = None) -> list[str]:
        """``buildah run`` of ``command`` in the container, on the host's network, with ``env`` added."""
        settings = [item for name, value in (env or {}).items() for item in ("--env", f"{name}={value}")]
        return ["buildah", "run", "--isolation", "chroot", "--network", "host", *settings, self.name, "--", *command]

    def run(self, command: Sequence[str], env: Mapping[str, str] | None = None) -> str:
        """Run ``command`` to completion (bounded); its stdout."""
        return run(self.argv(command, env), timeout_s=COMMAND_TIMEOUT_S)

    def exit_status(self, command: Sequence[str], env: Mapping[str, str] | None = None) -> int:
        """Run ``command`` to completion (bounded); its exit status."""
        done = subprocess.run(
            self.argv(command, env),
            capture_output=True,
            timeout=COMMAND_TIMEOUT_S,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        return done.returncode

    def remove(self) -> None:
        subprocess.run(["buildah", "rm", self.name], capture_output=True, timeout=REMOVE_TIMEOUT_S, check=False)


def make_container(image: BuiltImage) -> Container:
    name = f"datapulse-test-{secrets.token_hex(4)}"
    run(["buildah", "from", "--pull=never", "--quiet", "--name", name, image.reference], timeout_s=COMMAND_TIMEOUT_S)
    return Container(name)


# --- what the lock says the image holds --------------------------------------------------------------------------


_REQUIREMENT: Final = re.compile(
    r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>[^\s;\\]+)\s*(?:;\s*(?P<marker>[^\\]+?))?\s*\\?$"
)

MARKER_ENVIRONMENT_SCRIPT: Final = """
import json, os, platform, sys
impl = sys.implementation
version = "{0.major}.{0.minor}.{0.micro}".format(impl.version)
if impl.version.releaselevel != "final":
    version += impl.version.releaselevel[0] + str(impl.version.serial)
print(json.dumps({
    "implementation_name": impl.name,
    "implementation_version": version,
    "os_name": os.name,
    "platform_machine": platform.machine(),
    "platform_release": platform.release(),
    "platform_system": platform.system(),
    "platform_version": platform.version(),
    "python_full_version": platform.python_version(),
    "platform_python_implementation": platform.python_implementation(),
    "python_version": ".".join(platform.python_version_tuple()[:2]),
    "sys_platform": sys.platform,
}))
"""
"""Prints PEP 508's marker environment of the interpreter that runs it (what packaging's default_environment() gives,
with the stdlib only: the image need not have packaging)."""

INSTALLED_SCRIPT: Final = """
import importlib.metadata, json
print(json.dumps(sorted((d.metadata["Name"], d.version) for d in importlib.metadata.distributions())))
"""
"""Prints every distribution the interpreter that runs it sees, as [name, version] pairs."""


@dataclass(frozen=True)
class LockedRequirement:
    name: str
    version: str
    marker: str | None


def locked_requirements() -> list[LockedRequirement]:
    """What the Dockerfile installs from uv.lock: the same ``uv export`` (offline), parsed into name, version and
    environment marker."""
    exported = run(
        [
            str(UV),
            "export",
            "--quiet",
            "--frozen",
            "--offline",
            "--format",
            "requirements-txt",
            "--no-dev",
            "--no-default-groups",
            "--no-emit-project",
            "--project",
            str(REPO_ROOT),
        ],
        timeout_s=COMMAND_TIMEOUT_S,
        env={"UV_PYTHON_DOWNLOADS": "never", "UV_NO_CACHE": "1"},
    )
    requirements = []
    for line in exported.splitlines():
        match = _REQUIREMENT.match(line)
        if match is not None:
            requirements.append(LockedRequirement(match["name"], match["version"], match["marker"]))
    assert requirements, f"no requirement in uv export's output:\n{exported[:2000]}"
    return requirements
