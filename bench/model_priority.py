"""Benchmark: the local model decoding beside a busy sandbox container, at several priorities.

llama.cpp's threads meet at a barrier every step, so one container on one of the cores holds
up all of them. serve-local raises its CPU priority (``servers.local_model.priority``); this
measures what each nice value buys and what it costs the container, side by side in one run:
one server (Qwen 1.5B, n = 4 samples decoding), and for each nice value: its decode rate for
10 s alone, then for the 15 s a CPU-bound container (one core, the sandbox image) runs beside
it, and how much work the container got done against the same container on an idle machine.

Needs root (CAP_SYS_NICE) for values below 0. This is a measurement, not a test.

Usage: python bench/model_priority.py [--nice 0 -5 -10 -20] [--model qwen2.5-coder-1.5b]
       [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import openai

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from optfolio.llm.settings import LOCAL_API_KEY  # noqa: E402
from sandbox.image import image_tag  # noqa: E402
from servers.local_model.endpoint import LocalServer, server_health  # noqa: E402
from servers.local_model.registry import DEFAULT_MODEL, pull  # noqa: E402

CONTAINER_S = 15  # the container's busy loop, wall seconds
ALONE_S = 10  # the decode rate's window with nothing beside it
BUSY_LOOP = (
    f"import time\nt = time.time(); n = 0\nwhile time.time() - t < {CONTAINER_S}: n += 1\nprint(n)"
)
# Outlasts both windows; the client then hangs up, and the server stops within a token.
MAX_TOKENS = 1000
# A text no sample ends (end of text) inside the windows measured.
PROMPT = [{"role": "user", "content": "Count from 1 to 2000 in words, one number per line."}]


def busy_container() -> int:
    """Loop iterations a one-core sandbox-image container gets through in CONTAINER_S."""
    command = ["docker", "run", "--rm", "--cpus", "1", "--network", "none", image_tag()]
    done = subprocess.run([*command, "python", "-c", BUSY_LOOP], capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"container failed: {done.stderr}")
    return int(done.stdout.strip())


def decoded(base_url: str) -> tuple[int, int, float]:
    """(request id, its tokens decoded so far, when) for the request holding the model."""
    current = server_health(base_url)["decoding"] or {"id": -1, "decoded": 0}
    return current["id"], current["decoded"], time.perf_counter()


def rate(start: tuple[int, int, float], end: tuple[int, int, float]) -> float:
    if start[0] != end[0] or start[0] < 0:
        sys.exit("the request finished inside a window: raise max_tokens")
    return (end[1] - start[1]) / (end[2] - start[2])


def measure(server: LocalServer, model: str, nice: int) -> dict[str, Any]:
    # The server leads its own session: its CPU group's nice can be changed from outside.
    assert server._process is not None
    Path(f"/proc/{server._process.pid}/autogroup").write_text(str(nice))
    client = openai.OpenAI(base_url=server.base_url, api_key=LOCAL_API_KEY, max_retries=0)

    def ask() -> None:
        with contextlib.suppress(openai.APIError):  # the hang-up below
            client.chat.completions.create(
                model=model, messages=PROMPT, max_tokens=MAX_TOKENS, n=4, seed=1
            )

    request = threading.Thread(target=ask)
    request.start()
    while decoded(server.base_url)[1] == 0:
        time.sleep(0.2)
    first = decoded(server.base_url)
    time.sleep(ALONE_S)
    before = decoded(server.base_url)
    work = busy_container()
    after = decoded(server.base_url)
    client.close()
    request.join()
    while server_health(server.base_url)["decoding"] is not None:
        time.sleep(0.2)
    return {"nice": nice, "alone": rate(first, before), "beside": rate(before, after), "work": work}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nice", type=int, nargs="+", default=[0, -5, -10, -20])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    pull(args.model, install=False)
    idle_work = busy_container()
    with LocalServer([args.model], nice=0) as server:
        rows = [measure(server, args.model, nice) for nice in args.nice]
    for row in rows:
        row["decode_kept"] = round(row["beside"] / row["alone"], 3)
        row["container_share"] = round(row.pop("work") / idle_work, 3)
        row["alone"], row["beside"] = round(row["alone"], 2), round(row["beside"], 2)
    if args.json:
        print(json.dumps({"model": args.model, "rows": rows}))
        return
    print(f"{args.model}, n = 4 decoding; a one-core busy container for {CONTAINER_S} s beside it")
    print("nice  alone tok/s  beside tok/s  decode kept  container's share of its core")
    for row in rows:
        print(
            f"{row['nice']:>4}  {row['alone']:>11.2f}  {row['beside']:>12.2f}  "
            f"{row['decode_kept']:>11.2f}  {row['container_share']:>6.2f}"
        )


if __name__ == "__main__":
    main()
