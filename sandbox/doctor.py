"""``optfolio sandbox doctor``: check the engine, the image and every limit with small probes."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from optfolio.errors import OptfolioError
from sandbox import engine
from sandbox.api import Sandbox
from sandbox.image import image_exists, image_tag
from sandbox.limits import DEFAULT_LIMITS, Limits


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


# Reads what the container was given from the inside; cgroup v1 and v2 paths both tried.
ISOLATION_PROBE = r"""
import json, os, socket
def read(*paths):
    for path in paths:
        try:
            return open(path).read().strip()
        except OSError:
            pass
    return None
facts = {"uid": os.getuid(), "env": sorted(os.environ)}
status = dict(l.split(":", 1) for l in open("/proc/self/status").read().splitlines() if ":" in l)
facts["cap_eff"] = status["CapEff"].strip()
facts["no_new_privs"] = status.get("NoNewPrivs", "").strip()
facts["seccomp"] = status.get("Seccomp", "").strip()
facts["interfaces"] = sorted(os.listdir("/sys/class/net"))
try:
    socket.create_connection(("1.1.1.1", 53), timeout=2).close(); facts["connect"] = "connected"
except OSError as e:
    facts["connect"] = type(e).__name__
try:
    socket.getaddrinfo("pypi.org", 443); facts["dns"] = "resolved"
except OSError as e:
    facts["dns"] = type(e).__name__
try:
    open("/etc/optfolio-probe", "w"); facts["root_write"] = "written"
except OSError as e:
    facts["root_write"] = type(e).__name__
try:
    for path in ("/work/probe", "/tmp/probe"):
        open(path, "w").write("x")
    facts["work_write"] = "ok"
except OSError as e:
    facts["work_write"] = type(e).__name__
st = os.statvfs("/work")
facts["work_mb"] = st.f_blocks * st.f_frsize // 2**20
facts["memory"] = read("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes")
facts["swap"] = read("/sys/fs/cgroup/memory.swap.max",
                     "/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes")
facts["pids"] = read("/sys/fs/cgroup/pids.max", "/sys/fs/cgroup/pids/pids.max")
cpu = read("/sys/fs/cgroup/cpu.max")
if cpu is None:
    v1 = ("/sys/fs/cgroup/cpu/", "/sys/fs/cgroup/cpu,cpuacct/")
    quota = read(*(d + "cpu.cfs_quota_us" for d in v1))
    period = read(*(d + "cpu.cfs_period_us" for d in v1))
    cpu = f"{quota} {period}"
facts["cpu"] = cpu
print("FACTS", json.dumps(facts))
"""

TIMEOUT_PROBE = "import time\nprint('sleeping', flush=True)\ntime.sleep(60)\n"
FLOOD_PROBE = "import sys\nwhile True:\n    sys.stdout.write('x' * 65536)\n"
MEMORY_PROBE = "hog = []\nwhile True:\n    hog.append(bytearray(16 * 2**20))\n"
FORK_PROBE = r"""
import os, time
n = 0
try:
    while n < 10000:
        if os.fork() == 0:
            time.sleep(30); os._exit(0)
        n += 1
except OSError:
    pass
print("FORKED", n)
"""


def _isolation_checks(facts: dict, limits: Limits) -> list[Check]:
    memory_bytes = limits.memory_mb * 2**20
    # Docker turns nano_cpus into a CFS quota per 100 ms period (same text in v1 and v2 here).
    cpu_ok = facts["cpu"].split()[:2] == [str(int(limits.cpus * 100000)), "100000"]
    swap = facts["swap"]
    return [
        Check("non-root user", facts["uid"] != 0, f"uid {facts['uid']}"),
        Check("no capabilities", int(facts["cap_eff"], 16) == 0, f"CapEff {facts['cap_eff']}"),
        Check("seccomp filter", facts["seccomp"] == "2", f"Seccomp {facts['seccomp']}"),
        Check(
            "no-new-privileges", facts["no_new_privs"] == "1", f"NoNewPrivs {facts['no_new_privs']}"
        ),
        Check(
            "no network interfaces but lo", facts["interfaces"] == ["lo"], str(facts["interfaces"])
        ),
        Check("no outbound connection", facts["connect"] != "connected", facts["connect"]),
        Check("no DNS", facts["dns"] != "resolved", facts["dns"]),
        Check("read-only root", facts["root_write"] != "written", facts["root_write"]),
        Check("work dirs writable", facts["work_write"] == "ok", facts["work_write"]),
        Check(
            "work tmpfs capped",
            0 < facts["work_mb"] <= limits.work_tmpfs_mb,
            f"{facts['work_mb']} MB",
        ),
        Check("memory limit", facts["memory"] == str(memory_bytes), f"{facts['memory']} bytes"),
        # v1 reports memory+swap (equal to memory: no swap), v2 the swap alone (0).
        Check("no swap", swap in (str(memory_bytes), "0"), f"{swap}"),
        Check("pids limit", facts["pids"] == str(limits.pids), f"{facts['pids']}"),
        Check("CPU quota", cpu_ok, facts["cpu"]),
        Check(
            "no host environment",
            set(facts["env"]) <= ALLOWED_ENV,
            ", ".join(sorted(set(facts["env"]) - ALLOWED_ENV)) or "only image variables",
        ),
    ]


ALLOWED_ENV = {
    "PATH",
    "HOME",
    "TMPDIR",
    "LANG",
    "PYTHONDONTWRITEBYTECODE",
    "PYTHONUNBUFFERED",
    "LC_CTYPE",  # Python sets it itself under C.UTF-8 coercion
}


def run_checks(limits: Limits = DEFAULT_LIMITS) -> list[Check]:
    """All checks; stops early (with the failing check last) when engine or image is missing."""
    status = engine.status()
    checks = [
        Check(
            "engine answers",
            status.answering,
            f"{status.host} {status.server_version or status.detail}",
        )
    ]
    if not status.answering:
        return checks
    client = engine.client()
    tag = image_tag()
    checks.append(Check("image built", image_exists(client, tag), tag))
    if not checks[-1].ok:
        return checks
    short = limits.with_(timeout_s=3.0)
    probes = [
        (ISOLATION_PROBE, limits),
        (TIMEOUT_PROBE, short),
        (FLOOD_PROBE, short),
        (MEMORY_PROBE, short.with_(memory_mb=64)),
        (FORK_PROBE, short),
    ]
    try:
        with Sandbox(limits=limits, client=client) as box, ThreadPoolExecutor(2) as executor:
            results = list(executor.map(lambda probe: box.run(*probe), probes))
    except OptfolioError as error:
        return [*checks, Check("sandbox runs", False, str(error))]
    isolation, timeout, flood, memory, fork = results
    checks.append(
        Check(
            "a container runs",
            isolation.status == "ok",
            f"{isolation.status}: {isolation.stderr[-200:]}",
        )
    )
    if isolation.status == "ok":
        line = next(x for x in isolation.stdout.splitlines() if x.startswith("FACTS "))
        checks += _isolation_checks(json.loads(line[6:]), limits)
    checks.append(
        Check(
            "wall timeout",
            timeout.status == "timeout",
            f"{timeout.status} after {timeout.runtime_s:.1f}s",
        )
    )
    checks.append(
        Check(
            "output cap",
            flood.status == "output_limit",
            f"{flood.status}, kept {len(flood.stdout)} B",
        )
    )
    checks.append(
        Check(
            "memory limit enforced",
            memory.status == "oom",
            f"{memory.status} (exit {memory.exit_code})",
        )
    )
    forked = next(
        (line.split()[1] for line in fork.stdout.splitlines() if line.startswith("FORKED")), "?"
    )
    checks.append(
        Check(
            "pids limit enforced",
            forked.isdigit() and int(forked) < limits.pids,
            f"{forked} forks before refusal",
        )
    )
    return checks
