"""serve-local's claim on the CPU (``servers.local_model.priority``), in real processes."""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from servers.local_model.priority import SERVER_NICE, claim_cpu, session_nice
from tests.plugins.ci import IN_CI

REPO = Path(__file__).resolve().parents[1]
# Claims in a child, then reports what the kernel says about the child, a thread it starts
# afterwards (llama.cpp's threads are made after the claim), and its session's CPU group.
CLAIM = """
import json, os, sys, threading
from servers.local_model.priority import claim_cpu, session_nice
got = claim_cpu(int(sys.argv[1]))
later = {}
thread = threading.Thread(
    target=lambda: later.update(nice=os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
)
thread.start(); thread.join()
print(json.dumps({"got": got.as_dict(), "thread_nice": later["nice"], "session": session_nice()}))
"""
AUTOGROUP_ON = Path("/proc/sys/kernel/sched_autogroup_enabled").read_text().strip() == "1"
# None when this session has no CPU group of its own even with autogroup on: a process
# in init's session (as under CI's runner) sits in the root group, and its children too.
OUR_SESSION_GROUP = session_nice()
PR_CAPBSET_DROP, CAP_SYS_NICE = 24, 23  # <linux/prctl.h>, <linux/capability.h>
# .ci/run runs as root: there, not being root is a failure, not a skip.
needs_root = pytest.mark.skipif(
    os.geteuid() != 0 and not IN_CI, reason="raising priority needs root"
)


def drop_sys_nice() -> None:
    """Before exec: out of the bounding set, so even root's child starts without it."""
    if ctypes.CDLL(None, use_errno=True).prctl(PR_CAPBSET_DROP, CAP_SYS_NICE, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP, CAP_SYS_NICE)")


def claim_in_child(nice: int, **popen: object) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", CLAIM, str(nice)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        **popen,  # type: ignore[arg-type]
    )
    return {**json.loads(done.stdout), "stderr": done.stderr}


@needs_root
def test_a_session_leader_raises_itself_its_later_threads_and_its_session_group() -> None:
    report = claim_in_child(-3, start_new_session=True)
    assert report["got"]["nice"] == -3
    assert report["thread_nice"] == -3
    if AUTOGROUP_ON:
        assert report["got"]["session_nice"] == report["session"] == -3
    assert report["got"]["note"] == "applied"


@needs_root
def test_a_server_in_someone_elses_session_leaves_that_session_group_alone() -> None:
    ours_before = Path("/proc/self/autogroup").read_text()
    report = claim_in_child(-4)
    assert report["got"]["nice"] == -4
    assert Path("/proc/self/autogroup").read_text() == ours_before
    if OUR_SESSION_GROUP is not None:
        assert report["got"]["note"] == "within its session's CPU group only"
    else:
        assert report["got"]["note"] == "applied"


def test_without_the_capability_the_server_runs_normally_and_says_why() -> None:
    report = claim_in_child(-2, start_new_session=True, preexec_fn=drop_sys_nice)
    assert report["got"]["nice"] is None
    assert report["thread_nice"] == 0
    assert "CAP_SYS_NICE" in report["got"]["note"]
    assert "could not raise CPU priority to nice -2" in report["stderr"]


def test_priority_outside_minus_20_to_0_is_refused() -> None:
    with pytest.raises(ValueError, match="between -20 and 0, got 3"):
        claim_cpu(3)
    assert -20 <= SERVER_NICE < 0
