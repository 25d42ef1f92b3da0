"""The sandbox image: a Debian base imported from mmdebstrap, then ``sandbox/Dockerfile``.

No registry answers here, so ``FROM python:...`` is impossible: the base is a minimal Debian
bookworm (its python3 is 3.11) made by ``mmdebstrap --variant=minbase`` from the host's apt
mirror and loaded with ``docker import``. Both tags follow a hash of their recipe, so an
unchanged recipe is reused and a changed one rebuilt.

The Dockerfile build goes through the docker CLI with BuildKit because the registry CA must
reach pip as a build *secret* (in no layer), and the SDK's build API is the legacy builder,
which has no secrets.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

import docker
import docker.errors

from optfolio.errors import ServiceUnavailable
from sandbox.engine import apt_install

HERE = Path(__file__).resolve().parent
DOCKERFILE = HERE / "Dockerfile"
# Everything the Dockerfile copies: part of the recipe, so part of the tag.
CONTEXT_FILES = (DOCKERFILE, HERE / "runner.py")

IMAGE_REPOSITORY = "optfolio-sandbox"
BASE_REPOSITORY = "optfolio-sandbox-base"
BASE_SUITE = "bookworm"
BASE_PACKAGES = ("python3", "passwd")
BASE_COMPONENTS = "main"
DEBIAN_SOURCES = Path("/etc/apt/sources.list.d/debian.sources")
DEFAULT_MIRRORS = (
    f"deb http://deb.debian.org/debian {BASE_SUITE} {BASE_COMPONENTS}",
    f"deb http://deb.debian.org/debian {BASE_SUITE}-updates {BASE_COMPONENTS}",
    f"deb http://deb.debian.org/debian-security {BASE_SUITE}-security {BASE_COMPONENTS}",
)
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
LABEL = "optfolio.sandbox.recipe"

Log = Callable[[str], None]


def _digest(*parts: bytes) -> str:
    hasher = hashlib.sha256()
    for part in parts:
        hasher.update(len(part).to_bytes(8, "big") + part)
    return hasher.hexdigest()[:16]


def base_tag() -> str:
    # Mirrors are not in the hash: any bookworm mirror gives the same recipe.
    recipe = f"mmdebstrap minbase {BASE_SUITE} {' '.join(BASE_PACKAGES)}".encode()
    return f"{BASE_REPOSITORY}:{_digest(recipe)}"


def image_tag() -> str:
    """The tag of the image the current recipe builds."""
    parts = [base_tag().encode()]
    for path in CONTEXT_FILES:
        parts += [path.name.encode(), path.read_bytes()]
    return f"{IMAGE_REPOSITORY}:{_digest(*parts)}"


def mirror_lines() -> list[str]:
    """One-line apt sources for mmdebstrap, from the host's deb822 Debian sources if any."""
    if not DEBIAN_SOURCES.exists():
        return list(DEFAULT_MIRRORS)
    lines = []
    for stanza in re.split(r"\n\s*\n", DEBIAN_SOURCES.read_text()):
        fields = {}
        for line in stanza.splitlines():
            key, sep, value = line.partition(":")
            if sep and not line.startswith(("#", " ")):
                fields[key.strip().lower()] = value.strip()
        if "deb" not in fields.get("types", "").split():
            continue
        for uri in fields.get("uris", "").split():
            for suite in fields.get("suites", "").split():
                if suite.startswith(BASE_SUITE):
                    lines.append(f"deb {uri} {suite} {BASE_COMPONENTS}")
    return lines or list(DEFAULT_MIRRORS)


def image_exists(client: docker.DockerClient, tag: str) -> bool:
    try:
        client.images.get(tag)
        return True
    except docker.errors.ImageNotFound:
        return False


def require_image(client: docker.DockerClient, tag: str | None = None) -> str:
    """The image tag (given, $OPTFOLIO_SANDBOX_IMAGE, or the recipe's), if the image exists."""
    tag = tag or os.environ.get("OPTFOLIO_SANDBOX_IMAGE") or image_tag()
    if not image_exists(client, tag):
        raise ServiceUnavailable(f"sandbox image {tag} is not built; run `optfolio sandbox build`")
    return tag


def build_base(client: docker.DockerClient, log: Log = print) -> str:
    tag = base_tag()
    if image_exists(client, tag):
        return tag
    if shutil.which("mmdebstrap") is None:
        log("installing mmdebstrap (Debian package)")
        apt_install("mmdebstrap")
    with tempfile.TemporaryDirectory(prefix="optfolio-base-") as scratch:
        tarball = Path(scratch) / "rootfs.tar"
        command = [
            "mmdebstrap",
            "--variant=minbase",
            f"--include={','.join(BASE_PACKAGES)}",
            # Smaller image: no docs, man pages or locales beyond C.UTF-8.
            "--dpkgopt=path-exclude=/usr/share/{doc,man,info,locale}/*",
            "--aptopt=Acquire::Check-Valid-Until false",
            BASE_SUITE,
            str(tarball),
            *mirror_lines(),
        ]
        log(f"building base {tag}: {' '.join(command[:4])} ...")
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            raise ServiceUnavailable(f"mmdebstrap failed: {' | '.join(tail)}")
        repository, _, version = tag.partition(":")
        client.api.import_image_from_file(
            str(tarball), repository=repository, tag=version, changes=[f"LABEL {LABEL}={version}"]
        )
    return tag


def _buildkit_cli() -> list[str]:
    """A docker CLI command prefix that builds with BuildKit, or ServiceUnavailable."""
    candidates = []
    for directory in [*os.environ.get("PATH", "").split(os.pathsep), "/usr/bin"]:
        path = Path(directory) / "docker"
        if path.is_file() and os.access(path, os.X_OK) and str(path) not in candidates:
            candidates.append(str(path))
    for cli in candidates:
        probe = subprocess.run([cli, "buildx", "version"], capture_output=True, check=False)
        if probe.returncode == 0:
            return [cli, "buildx", "build", "--load"]
        version = subprocess.run(
            [cli, "version", "--format", "{{.Client.Version}}"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
        # Before 23.0 the classic CLI has BuildKit built in (DOCKER_BUILDKIT=1).
        major = re.match(r"(\d+)\.", version)
        if major and int(major.group(1)) < 23:
            return [cli, "build"]
    raise ServiceUnavailable(
        "no docker CLI with BuildKit found (need `docker buildx`, or Debian's docker.io CLI)"
    )


def build(client: docker.DockerClient, *, force: bool = False, log: Log = print) -> str:
    """Build the base and the sandbox image unless the recipe's tag exists; return the tag."""
    tag = image_tag()
    if image_exists(client, tag) and not force:
        log(f"sandbox image {tag} is up to date")
        return tag
    base = build_base(client, log)
    cli = _buildkit_cli()
    ca_bundle = Path(os.environ.get("PIP_CERT", HOST_CA_BUNDLE))
    with tempfile.TemporaryDirectory(prefix="optfolio-context-") as context:
        # The context holds exactly the hashed files: nothing else can leak into the image.
        for path in CONTEXT_FILES:
            shutil.copy2(path, Path(context) / path.name)
        command = [
            *cli,
            "--network=host",  # the engine runs without a bridge; pip needs PyPI
            "--build-arg",
            f"BASE_IMAGE={base}",
            "--label",
            f"{LABEL}={tag.partition(':')[2]}",
            "--tag",
            tag,
            "--file",
            str(Path(context) / DOCKERFILE.name),
        ]
        if ca_bundle.is_file():
            command += ["--secret", f"id=ca,src={ca_bundle}"]
        command.append(context)
        log(f"building {tag} with {' '.join(cli)}")
        env = {**os.environ, "DOCKER_BUILDKIT": "1"}
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
            raise ServiceUnavailable(f"sandbox image build failed: {' | '.join(tail)}")
    return tag
