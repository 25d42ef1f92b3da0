"""Stage: draw figures from assembled results and attach them to the flow run."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from optfolio import run_results
from optfolio.figures import plot_simulation, png_data_uri
from optfolio.run_config import RunRef
from optfolio.store import RunStore

# The α of the summary table in a run's artifact; the figures sweep the whole grid.
ARTIFACT_ALPHA = 0.5


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


@task(retries=1, cache_policy=NO_CACHE)
def draw_run_figures(run: RunRef) -> list[str]:
    """A run's figures (paper Fig. 5 and the α sweeps) → ``<store>/figures/run_id=<id>/``,
    also shown in the Prefect UI with the dataset summary as a markdown artifact."""
    store, run_id = RunStore(run.store), run.run_id
    paths = run_results.write_run_figures(store, run_id)
    with run_results.connect_run(store, run_id, [ARTIFACT_ALPHA]) as con:
        summary = run_results.summary_table(con, [ARTIFACT_ALPHA])
    markdown = "\n\n".join(
        [
            f"## Run {run_id}: dataset summary",
            markdown_table(summary),
            *(f"### {p.stem}\n![{p.stem}]({png_data_uri(p)})" for p in paths),
            "Files: " + ", ".join(f"`{p}`" for p in paths),
        ]
    )
    create_markdown_artifact(
        key="portfolio-run-figures", markdown=markdown, description=f"Figures of run {run_id}"
    )
    return [str(p) for p in paths]


def markdown_table(frame: pd.DataFrame) -> str:
    def cell(value: object) -> str:
        if isinstance(value, float):
            return "" if pd.isna(value) else f"{value:.3f}"
        return str(value).replace("|", "\\|")

    header = "| " + " | ".join(frame.columns) + " |"
    rule = "| " + " | ".join("---" for _ in frame.columns) + " |"
    rows = ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *rows])
