"""Writers of the run store caught in the middle of a write, for the tests of runs sharing one
store: one paused (alive, its temporary file awaiting its rename) and one killed (its
temporary file left behind for a sweep)."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

# Enters the atomic write, writes half a file, prints the temporary path, then waits for a line
# on stdin before finishing the file and renaming it.
PAUSED_WRITER = """
import sys
from pathlib import Path
from optfolio.store import atomic_path
final = Path(sys.argv[1])
with atomic_path(final) as temp:
    temp.write_text("half")
    print(temp, flush=True)
    sys.stdin.readline()
    temp.write_text("whole")
print("renamed", flush=True)
"""


@dataclass
class PausedWriter:
    process: subprocess.Popen[str]
    final: Path
    temp: Path

    def finish(self) -> None:
        """Let it complete its write; it must rename its temporary file over ``final``."""
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write("go\n")
        self.process.stdin.flush()
        said = self.process.stdout.readline().strip()
        code = self.process.wait(timeout=30)
        assert (said, code) == ("renamed", 0), "the paused writer's rename failed"
        assert self.final.read_text() == "whole"


def _start(final: Path) -> PausedWriter:
    process = subprocess.Popen(
        [sys.executable, "-c", PAUSED_WRITER, str(final)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    return PausedWriter(process, final, Path(process.stdout.readline().strip()))


@contextlib.contextmanager
def paused_writer(final: Path) -> Iterator[PausedWriter]:
    """A live process in the middle of writing ``final`` for as long as the block runs."""
    writer = _start(final)
    try:
        yield writer
    finally:
        if writer.process.poll() is None:
            writer.process.kill()
            writer.process.wait()


def killed_writer(final: Path) -> Path:
    """The temporary file of a writer SIGKILLed in the middle of writing ``final``."""
    writer = _start(final)
    writer.process.kill()
    writer.process.wait()
    assert writer.temp.is_file()
    return writer.temp
