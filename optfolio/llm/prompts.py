"""Prompt templates live as Markdown files in ``optfolio/llm/prompts/``; ``{{name}}`` marks a
slot. We do not use ``str.format``: problem texts and code are full of braces.

A role's prompt is made of templates (:data:`ROLE_TEMPLATES`). The judge's is the evaluator's
plus the ground truth, one definition for both, so the judge scores "under the same scoring
regime as the evaluator". The part every candidate of a problem shares (instructions, problem,
ground truth) comes before the candidate's own, so a server can reuse the cached prefix.
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources

_SLOT = re.compile(r"\{\{(\w+)\}\}")

# role: (system message template, user message templates joined by blank lines)
ROLE_TEMPLATES: dict[str, tuple[str, tuple[str, ...]]] = {
    "generator": ("generator_system", ("generator",)),
    "evaluator": ("review_system", ("review_problem", "review_candidate")),
    "judge": ("review_system", ("review_problem", "ground_truth", "review_candidate")),
}


@cache
def template(name: str) -> str:
    """The text of ``prompts/<name>.md``."""
    return resources.files("optfolio.llm").joinpath("prompts", f"{name}.md").read_text("utf-8")


def render(name: str, **values: str) -> str:
    """Fill every slot of role ``name``'s user message (or of template ``name``); a slot
    without a value is a programming error."""
    parts = ROLE_TEMPLATES[name][1] if name in ROLE_TEMPLATES else (name,)
    text = "\n\n".join(template(part).strip() for part in parts)
    slots = set(_SLOT.findall(text))
    missing = slots - values.keys()
    if missing:
        raise KeyError(f"template {name!r} needs {', '.join(sorted(missing))}")
    # One pass, so a value that itself contains "{{x}}" is never expanded again.
    return _SLOT.sub(lambda m: values[m.group(1)], text).strip()


def messages(name: str, **values: str) -> list[dict[str, str]]:
    """System + user messages for role ``name`` (``generator``, ``evaluator``, ``judge``)."""
    system, _ = ROLE_TEMPLATES[name]
    return [
        {"role": "system", "content": template(system).strip()},
        {"role": "user", "content": render(name, **values)},
    ]
