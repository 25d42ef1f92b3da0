"""Prefect flows: they only compose the tasks of ``tasks/``."""

from optfolio.settings import apply_prefect_defaults

apply_prefect_defaults()
