"""The LLM layer: an OpenAI-compatible client with retries, a response cache and usage
accounting; the generator, evaluator and judge roles. (The embedded local model that serves
them offline runs in ``servers/local_model``.)

Nothing here imports Prefect; tasks in ``tasks/`` wrap these functions.
"""

from optfolio.llm.cache import ResponseCache
from optfolio.llm.client import LLMClient, LLMRequestError, Sample, Usage
from optfolio.llm.generator import candidates_table, generate_candidates
from optfolio.llm.review import evaluate_candidate, judge_candidate
from optfolio.llm.settings import LLMSettings

__all__ = [
    "LLMClient",
    "LLMRequestError",
    "LLMSettings",
    "ResponseCache",
    "Sample",
    "Usage",
    "candidates_table",
    "evaluate_candidate",
    "generate_candidates",
    "judge_candidate",
]
