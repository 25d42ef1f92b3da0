"""Figures of the simulated study (paper Figs. 1–4, 9, 10): mean coverage and mean portfolio
size against 1 − α, one line per evaluator error, with 95% confidence bands over seeds."""

from __future__ import annotations

import base64
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on servers and in CI
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

Z_95 = 1.959963984540054


def mean_with_ci(frame: pd.DataFrame, group: list[str], value: str) -> pd.DataFrame:
    """Mean, and the normal-approximation 95% interval of the mean, per group."""
    stats = frame.groupby(group, observed=True)[value].agg(["mean", "std", "count"]).reset_index()
    half_width = Z_95 * stats["std"].fillna(0.0) / np.sqrt(stats["count"].clip(lower=1))
    stats["low"] = stats["mean"] - half_width
    stats["high"] = stats["mean"] + half_width
    return stats


def plot_simulation(results: pd.DataFrame, out_dir: Path) -> list[Path]:
    """One PNG per generator: coverage (top) and portfolio size (bottom), a column per K."""
    out_dir.mkdir(parents=True, exist_ok=True)
    results = results.assign(one_minus_alpha=1.0 - results["alpha"])
    written = []
    Ks = sorted(results["K"].unique())
    errors = sorted(results["evaluator_error"].unique())
    colors = plt.get_cmap("viridis")(np.linspace(0.0, 0.9, len(errors)))
    for generator in sorted(results["generator"].unique()):
        subset = results[results["generator"] == generator]
        figure, axes = plt.subplots(
            2, len(Ks), figsize=(3.6 * len(Ks), 6.4), squeeze=False, sharex=True
        )
        for column, K in enumerate(Ks):
            per_K = subset[subset["K"] == K]
            for error, color in zip(errors, colors, strict=True):
                per_error = per_K[per_K["evaluator_error"] == error]
                for row, value in enumerate(("coverage", "portfolio_size")):
                    stats = mean_with_ci(
                        per_error.dropna(subset=[value]), ["one_minus_alpha"], value
                    )
                    axis = axes[row][column]
                    axis.plot(
                        stats["one_minus_alpha"], stats["mean"], color=color, label=f"ε = {error:g}"
                    )
                    axis.fill_between(
                        stats["one_minus_alpha"],
                        stats["low"],
                        stats["high"],
                        color=color,
                        alpha=0.2,
                        linewidth=0,
                    )
            axes[0][column].plot(
                [0, 1], [0, 1], linestyle="--", color="grey", linewidth=0.8, label="1 − α"
            )
            axes[0][column].set_title(f"K = {K}")
            axes[0][column].set_ylim(-0.02, 1.02)
            axes[1][column].set_xlabel("1 − α")
        axes[0][0].set_ylabel("mean coverage")
        axes[1][0].set_ylabel("mean portfolio size")
        axes[0][-1].legend(fontsize="small", loc="lower right")
        figure.suptitle(
            f"Simulated study, {generator.replace('_', ' ')} generator "
            "(95% confidence bands over seeds)"
        )
        figure.tight_layout()
        path = out_dir / f"simulation_{generator}.png"
        figure.savefig(path, dpi=110)
        plt.close(figure)
        written.append(path)
    return written


def png_data_uri(path: Path) -> str:
    """A PNG as a data: URI, so markdown artifacts show it offline (file:// URLs do not)."""
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()
