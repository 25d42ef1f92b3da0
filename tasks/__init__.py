"""Prefect tasks, one module per pipeline stage. Each reads and writes Parquet through the run
store and returns small values (paths, counts), never DataFrames."""

from optfolio.settings import apply_prefect_defaults

apply_prefect_defaults()
