"""Containers never outlive their run: single use, Ctrl-C, crashed owners; engine sessions."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time

import docker
import pytest

from sandbox import DEFAULT_LIMITS, Sandbox, cleanup, engine, image
from sandbox.container import discard, start_container
from tests.plugins.ci import prerequisite_missing

pytestmark = pytest.mark.docker


def _mine(client: docker.DockerClient) -> list[str]:
    return cleanup.list_sandbox_containers(client, owner=cleanup.owner_id())


def test_each_run_gets_a_fresh_container(sandbox_box: Sandbox) -> None:
    code = "import socket, os\nprint(socket.gethostname(), os.path.exists('/work/mark'))\n"
    code += "open('/work/mark', 'w').write('x')\n"
    first, second = sandbox_box.run_many([code, code])
    # The second run does not see the first one's file: a new container, new tmpfs.
    assert first.stdout.split()[1] == second.stdout.split()[1] == "False"


def test_warm_pool_keeps_its_size_and_removes_used_containers(
    docker_client: docker.DockerClient, sandbox_image: str
) -> None:
    with Sandbox(client=docker_client, image=sandbox_image, warm=2) as box:
        assert box.run("print('STATUS: ok')").status == "ok"
        deadline = time.monotonic() + 60
        while len(_mine(docker_client)) < 2 + 2 and time.monotonic() < deadline:
            time.sleep(0.1)  # the session's own pool (2) plus this one, refilled
        assert len(_mine(docker_client)) >= 4
    time.sleep(0.1)
    assert len(_mine(docker_client)) == 2  # only the session pool's containers remain


class _RefusedOnce:
    """A real container whose first removal the engine refuses (fault injection: Docker answers
    a force-remove of a container still starting with an error; not reproducible on demand)."""

    def __init__(self, container: docker.models.containers.Container) -> None:
        self.container = container
        self.id = container.id
        self.refusals = 0

    def remove(self, **kwargs: object) -> None:
        if self.refusals == 0:
            self.refusals += 1
            raise docker.errors.APIError("500 Server Error: container is starting")
        self.container.remove(**kwargs)


def test_a_container_the_engine_would_not_remove_yet_is_kept_for_the_next_sweep(
    docker_client: docker.DockerClient, sandbox_image: str
) -> None:
    slot = start_container(docker_client, sandbox_image, DEFAULT_LIMITS)
    flaky = _RefusedOnce(slot.container)
    tracker = cleanup.Tracker()
    tracker.add(flaky)  # type: ignore[arg-type]
    try:
        assert tracker.remove_all() == 0
        assert slot.container.id in _mine(docker_client)
        assert tracker.remove_all() == 1
        assert slot.container.id not in _mine(docker_client)
        assert tracker.remove_all() == 0
    finally:
        discard(slot.container)


def test_remove_own_removes_this_process_containers_tracked_or_not_and_no_one_elses(
    docker_client: docker.DockerClient, sandbox_image: str
) -> None:
    # In a child: this test process's own containers (fixtures') are not ours to remove.
    script = (
        "import docker\n"
        "from sandbox import DEFAULT_LIMITS, cleanup\n"
        "from sandbox.container import start_container\n"
        "client = docker.from_env()\n"
        f"slot = start_container(client, {sandbox_image!r}, DEFAULT_LIMITS)\n"
        "cleanup.TRACKER.discard(slot.container)\n"  # created, not yet tracked
        "print(slot.container.id, cleanup.remove_own(client), flush=True)\n"
    )
    someone_elses = docker_client.containers.create(
        sandbox_image, labels={cleanup.LABEL: "1", cleanup.OWNER_LABEL: "another-host:1:1"}
    )
    try:
        done = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
        untracked, removed = done.stdout.split()
        assert removed == "1"
        remaining = cleanup.list_sandbox_containers(docker_client)
        assert untracked not in remaining
        assert someone_elses.id in remaining
    finally:
        someone_elses.remove(force=True)


def test_ctrl_c_removes_running_containers(docker_client: docker.DockerClient) -> None:
    script = (
        "import faulthandler, signal\n"
        "faulthandler.register(signal.SIGUSR1)\n"  # where it hangs, if it ever does
        # Python keeps SIGINT ignored when its parent ignored it (a background job of a
        # non-interactive shell, as CI may run the tests): Ctrl-C would never arrive.
        "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
        "from sandbox import Sandbox\n"
        "with Sandbox() as box:\n"
        "    box.run_many(['import time\\ntime.sleep(300)'] * 2, parallelism=2)\n"
    )
    process = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE, text=True)
    owner = cleanup.owner_id(process.pid)
    try:
        deadline = time.monotonic() + 60
        while len(cleanup.list_sandbox_containers(docker_client, owner)) < 2:
            assert time.monotonic() < deadline, "the two runs never started"
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            time.sleep(0.05)
        process.send_signal(signal.SIGINT)
        try:
            _, stderr = process.communicate(timeout=45)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGUSR1)
            time.sleep(2)
            process.kill()
            threads = process.communicate()[1]
            left = cleanup.list_sandbox_containers(docker_client, owner)
            pytest.fail(f"still running 45 s after Ctrl-C; containers {left}; threads:\n{threads}")
    finally:
        process.kill()
    assert "KeyboardInterrupt" in stderr
    assert cleanup.list_sandbox_containers(docker_client, owner) == []


def test_leftovers_of_a_dead_owner_are_removed_at_start(
    docker_client: docker.DockerClient, sandbox_image: str
) -> None:
    # A process that dies holding a container (kill -9: no finally, no atexit).
    script = (
        "import os, docker\n"
        "from sandbox.container import start_container\n"
        "from sandbox import DEFAULT_LIMITS\n"
        f"slot = start_container(docker.from_env(), {sandbox_image!r}, DEFAULT_LIMITS)\n"
        "print(slot.container.id, flush=True)\n"
        "os.kill(os.getpid(), 9)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    orphan = done.stdout.strip()
    assert orphan, done.stderr
    assert orphan in cleanup.list_sandbox_containers(docker_client)
    # A live owner's containers stay: ours, started here, must survive the sweep.
    live = start_container(docker_client, sandbox_image, DEFAULT_LIMITS)
    try:
        cleanup.remove_leftovers(docker_client)
        remaining = cleanup.list_sandbox_containers(docker_client)
        assert orphan not in remaining
        assert live.container.id in remaining
    finally:
        discard(live.container)


def test_engine_session_reuses_a_running_engine() -> None:
    before = engine.status()
    assert before.answering
    started = time.monotonic()
    with engine.session() as client:
        assert client.ping()
    assert time.monotonic() - started < 30  # generous: it is one ping when already up
    assert engine.status().answering  # not stopped: this session did not start it


def test_image_tag_follows_the_recipe(
    docker_client: docker.DockerClient, sandbox_image: str
) -> None:
    assert sandbox_image == image.image_tag()
    assert image.image_tag() == image.image_tag()  # deterministic
    assert image.image_exists(docker_client, sandbox_image)
    labels = docker_client.images.get(sandbox_image).labels
    assert labels[image.LABEL] == sandbox_image.partition(":")[2]


@pytest.mark.slow
def test_host_ca_bundle_is_in_no_image_layer(
    docker_client: docker.DockerClient, sandbox_image: str
) -> None:
    # The registry CA reached pip only as a build secret: no layer (base included) may hold
    # any certificate of the host's bundle. Code mentions PEM markers (ssl.py): those blocks
    # are not certificates of the bundle, so each PEM block found is compared to the bundle.
    bundle = image.HOST_CA_BUNDLE
    if not bundle.is_file():
        prerequisite_missing(f"no host CA bundle at {bundle}")
    pem = re.compile(rb"-----BEGIN CERTIFICATE-----([A-Za-z0-9+/=\s]{64,}?)-----END CERTIFICATE")
    host_certs = {re.sub(rb"\s", b"", body) for body in pem.findall(bundle.read_bytes())}
    assert host_certs
    found: set[bytes] = set()
    tail = b""
    for chunk in docker_client.images.get(sandbox_image).save(chunk_size=1 << 22):
        window = tail + chunk
        found |= {re.sub(rb"\s", b"", body) for body in pem.findall(window)}
        tail = window[-8192:]  # a certificate split across chunks is caught in the next window
    assert found & host_certs == set()
