"""Prompt templates live as Markdown files in ``optfolio/llm/prompts/``; ``{{name}}`` marks a
slot. We do not use ``str.format``: problem texts and code are full of braces."""

from __future__ import annotations

import re
from functools import cache
from importlib import resources

_SLOT = re.compile(r"\{\{(\w+)\}\}")


@cache
def template(name: str) -> str:
    """The text of ``prompts/<name>.md``."""
    return resources.files("optfolio.llm").joinpath("prompts", f"{name}.md").read_text("utf-8")


def render(name: str, **values: str) -> str:
    """Fill every slot of template ``name``; a slot without a value is a programming error."""
    text = template(name)
    slots = set(_SLOT.findall(text))
    missing = slots - values.keys()
    if missing:
        raise KeyError(f"template {name!r} needs {', '.join(sorted(missing))}")
    # One pass, so a value that itself contains "{{x}}" is never expanded again.
    return _SLOT.sub(lambda m: values[m.group(1)], text).strip()


def messages(name: str, **values: str) -> list[dict[str, str]]:
    """System + user messages for role ``name`` (``generator``, ``evaluator``, ``judge``)."""
    return [
        {"role": "system", "content": template(f"{name}_system").strip()},
        {"role": "user", "content": render(name, **values)},
    ]
