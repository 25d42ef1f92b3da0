"""optfolio: robust portfolios of LLM-generated optimization models.

The domain library. It never imports Prefect: orchestration lives in ``tasks/`` and
``flows/``, which call into this package.
"""

__version__ = "0.1.0"
