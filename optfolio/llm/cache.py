"""Content-addressed response cache: one JSON file per answered sample.

The key is the SHA-256 of the canonical request (model, messages, sampling parameters and the
sample's index), never of the endpoint's URL or key, so a re-run against a freshly started
local server (new port) or with a rotated key still hits. Files live under the run store root,
``<store>/_llm_cache/<2 hex>/<64 hex>.json``.

Concurrent writers: each writes a private temporary file and *links* it to the final name.
``os.link`` fails if the name exists, so the first answer wins and every later writer reads
and returns that one: all processes agree on what sample ``i`` of a request is.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from optfolio.store import raise_if_full, temporary_path

CACHE_DIRNAME = "_llm_cache"
_FORMAT = 1


def request_key(
    model: str, messages: list[dict[str, str]], params: Mapping[str, Any], index: int
) -> str:
    """The cache key of sample ``index`` of a request; ``params`` must not hold ``n``."""
    canonical = json.dumps(
        {"v": _FORMAT, "model": model, "messages": messages, "params": dict(params), "i": index},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


class ResponseCache:
    """A directory of cached samples; safe for many threads and processes at once."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory).expanduser().resolve()

    @classmethod
    def in_store(cls, store_root: str | os.PathLike[str]) -> ResponseCache:
        return cls(Path(store_root) / CACHE_DIRNAME)

    def path(self, key: str) -> Path:
        return self.directory / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        try:
            text = self.path(key).read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            # Cannot happen with atomic links, but a hand-edited file must not stop a run.
            return None
        return value if isinstance(value, dict) else None

    def put(self, key: str, value: Mapping[str, Any]) -> dict[str, Any]:
        """Store ``value`` unless another writer got there first; returns the stored value."""
        final = self.path(key)
        temp = temporary_path(final)
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            with open(temp, "w", encoding="utf-8") as handle:
                json.dump(value, handle, ensure_ascii=False, sort_keys=True)
                handle.flush()
                os.fsync(handle.fileno())
            try:
                os.link(temp, final)
            except FileExistsError:
                existing = self.get(key)
                if existing is not None:
                    return existing
                os.replace(temp, final)  # an unreadable leftover: ours replaces it
            except OSError as error:
                raise_if_full(error, final)
                # File systems without hard links (some network mounts): last writer wins.
                os.replace(temp, final)
        except OSError as error:
            raise_if_full(error, final)
            raise
        finally:
            temp.unlink(missing_ok=True)
        return dict(value)

    def __len__(self) -> int:
        return sum(1 for _ in self.directory.glob("*/*.json")) if self.directory.is_dir() else 0
