"""Stage: draw figures from assembled results and attach them to the flow run."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from optfolio.figures import plot_simulation, png_data_uri


@task(retries=1, cache_policy=NO_CACHE)
def draw_simulation_figures(simulation_path: str, figures_dir: str) -> list[str]:
    """PNG figures of the simulated study, also shown in the Prefect UI as an artifact."""
    results = pd.read_parquet(simulation_path)
    paths = plot_simulation(results, Path(figures_dir))
    # data: URIs render offline in the UI; file:// links do not
    markdown = "\n\n".join(f"### {p.stem}\n![{p.stem}]({png_data_uri(p)})" for p in paths)
    create_markdown_artifact(
        key="simulation-figures", markdown=markdown, description="Simulated study figures"
    )
    return [str(p) for p in paths]
