"""Figures of the simulated study (paper Figs. 1–4, 9, 10): mean coverage and mean portfolio
size against 1 − α, one line per evaluator error, with 95% confidence bands over seeds."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on servers and in CI
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from optfolio.evaluators import EVALUATORS
from optfolio.store import atomic_path

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
        with atomic_path(path) as temp:
            figure.savefig(temp, dpi=110, format="png")
        plt.close(figure)
        written.append(path)
    return written


def png_data_uri(path: Path) -> str:
    """A PNG as a data: URI, so markdown artifacts show it offline (file:// URLs do not)."""
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


# ---- figures of a portfolio run (paper Fig. 5 and the α sweeps) --------------------------

# Each registered evaluator kind (``optfolio.evaluators``) is a row or line, in its colour.
RANDOM_COLOR = "tab:orange"
SAMPLES_COLOR = "tab:purple"
# Fig. 5's baselines, named: random distinct valid candidates, and the paper's own "prompting
# multiple times" (s raw samples, duplicates and ⊥ included). Neither follows a ranking.
BASELINE_SELECTIONS = {
    "random": (RANDOM_COLOR, "random distinct candidates"),
    "samples": (SAMPLES_COLOR, "random raw samples"),
}
SCORE_AXIS = np.linspace(-0.05, 1.05, 221)  # normalized judge scores lie in [0, 1]


def fig5_mean_lines(fixed_size: pd.DataFrame) -> pd.DataFrame:
    """Mean minimum judge score per (evaluator, s, selection), the dashed lines of Fig. 5.

    Random draws do not depend on the evaluator: they are shown, and averaged, in both rows.
    The mean is over every value drawn (problems for portfolios, problems × draws for random).
    """
    rows = []
    judged = fixed_size.dropna(subset=["min_judge_score"])
    for evaluator in EVALUATORS:
        for size in sorted(fixed_size["size"].unique()):
            of_size = judged[judged["size"] == size]
            portfolio = of_size[
                (of_size["selection"] == "portfolio") & (of_size["evaluator"] == evaluator)
            ]
            baselines = {
                selection: of_size[of_size["selection"] == selection]
                for selection in BASELINE_SELECTIONS
            }
            for selection, values in (("portfolio", portfolio), *baselines.items()):
                rows.append(
                    {
                        "evaluator": evaluator,
                        "size": int(size),
                        "selection": selection,
                        "values": len(values),
                        "problems": values["problem_id"].nunique(),
                        "mean_min_judge": values["min_judge_score"].mean()
                        if len(values)
                        else float("nan"),
                    }
                )
    return pd.DataFrame(
        rows, columns=["evaluator", "size", "selection", "values", "problems", "mean_min_judge"]
    )


def density_or_rug(axis: plt.Axes, values: np.ndarray, color: str, label: str) -> str:
    """A Gaussian KDE of ``values``; with fewer than two distinct values (common in small
    runs) no density exists, so draw the values as vertical lines and say so in the legend.
    Returns how the values were drawn: ``kde``, ``lines`` or ``none``."""
    from scipy.stats import gaussian_kde

    if len(values) == 0:
        return "none"
    axis.plot(values, np.zeros_like(values), "|", color=color, markersize=12, alpha=0.6)
    if len(np.unique(values)) >= 2:
        try:
            density = gaussian_kde(values)(SCORE_AXIS)
        except np.linalg.LinAlgError:
            density = None
        if density is not None:
            axis.plot(SCORE_AXIS, density, color=color, label=label)
            axis.fill_between(SCORE_AXIS, density, color=color, alpha=0.15, linewidth=0)
            return "kde"
    for value in np.unique(values):
        axis.axvline(value, color=color, linewidth=2.5, alpha=0.5)
    axis.plot([], [], color=color, linewidth=2.5, alpha=0.5, label=f"{label}, no KDE: one value")
    return "lines"


def plot_fig5_min_judge(
    fixed_size: pd.DataFrame, title: str, sizes: Sequence[int] = ()
) -> plt.Figure:
    """Paper Fig. 5: KDE of the portfolio's minimum judge score against random s-subsets,
    a row per evaluator type and a column per s (``sizes``, else the sizes in the data),
    dashed lines at the means."""
    sizes = sorted(set(sizes) or {int(s) for s in fixed_size["size"].unique()}) or [2]
    means = fig5_mean_lines(fixed_size)
    judged = fixed_size.dropna(subset=["min_judge_score"])
    figure, axes = plt.subplots(
        len(EVALUATORS), len(sizes), figsize=(3.9 * len(sizes), 6.6), squeeze=False
    )
    for row, kind in enumerate(EVALUATORS.values()):
        evaluator, evaluator_label = kind.name, kind.label
        for column, size in enumerate(sizes):
            axis = axes[row][column]
            of_size = judged[judged["size"] == size]
            selections = {
                "portfolio": (
                    of_size[
                        (of_size["selection"] == "portfolio") & (of_size["evaluator"] == evaluator)
                    ],
                    kind.color,
                    "portfolio",
                ),
            } | {
                selection: (of_size[of_size["selection"] == selection], color, label)
                for selection, (color, label) in BASELINE_SELECTIONS.items()
            }
            densities = False
            for selection, (values, color, label) in selections.items():
                line = means[
                    (means["evaluator"] == evaluator)
                    & (means["size"] == size)
                    & (means["selection"] == selection)
                ]
                mean = float(line["mean_min_judge"].iloc[0]) if len(line) else float("nan")
                drawn = density_or_rug(
                    axis,
                    values["min_judge_score"].to_numpy(dtype=float),
                    color,
                    f"{label} (mean {mean:.2f})",
                )
                densities = densities or drawn == "kde"
                if drawn != "none":
                    axis.axvline(mean, color=color, linestyle="--", linewidth=1.2)
            problems = of_size[of_size["selection"] == "random"]["problem_id"].nunique()
            axis.set_title(f"s = {size}, {evaluator_label}\nn = {problems} problems", fontsize=10)
            axis.set_xlim(SCORE_AXIS[0], SCORE_AXIS[-1])
            if densities:
                axis.set_ylim(bottom=0)
            else:  # only vertical lines: a density axis has no scale to take
                axis.set_ylim(0, 1)
            if problems == 0:
                axis.text(
                    0.5,
                    0.5,
                    f"no problem has\n{size} valid candidates",
                    ha="center",
                    va="center",
                    transform=axis.transAxes,
                    color="grey",
                )
            else:
                axis.legend(fontsize="x-small", loc="upper left")
            axis.set_xlabel("minimum judge score in the selection")
        axes[row][0].set_ylabel("density")
    figure.suptitle(title)
    figure.tight_layout()
    return figure


def size_and_coverage_by_confidence(coverage: pd.DataFrame) -> pd.DataFrame:
    """Mean portfolio size and mean share of the correct candidates a portfolio holds, with
    95% intervals over problems, per (evaluator, 1 − α)."""
    frame = coverage.assign(one_minus_alpha=1.0 - coverage["alpha"])
    parts = []
    for value in ("portfolio_size", "correct_covered"):
        stats = mean_with_ci(
            frame.dropna(subset=[value]), ["evaluator", "one_minus_alpha"], value
        ).assign(quantity=value)
        parts.append(stats)
    return pd.concat(parts, ignore_index=True)


def plot_size_and_coverage(coverage: pd.DataFrame, title: str) -> plt.Figure:
    """Mean portfolio size (left) and coverage of correct candidates (right) against 1 − α."""
    stats = size_and_coverage_by_confidence(coverage)
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.4))
    labels = {
        "portfolio_size": "mean portfolio size k*(α)",
        "correct_covered": "mean share of the correct candidates\nthat the portfolio holds",
    }
    for axis, (quantity, label) in zip(axes, labels.items(), strict=True):
        for kind in EVALUATORS.values():
            evaluator, evaluator_label, color = kind.name, kind.label, kind.color
            line = stats[(stats["quantity"] == quantity) & (stats["evaluator"] == evaluator)]
            problems = int(line["count"].max()) if len(line) else 0
            axis.plot(
                line["one_minus_alpha"],
                line["mean"],
                color=color,
                marker="." if len(line) < 12 else None,
                label=f"{evaluator_label} (n = {problems})",
            )
            axis.fill_between(
                line["one_minus_alpha"], line["low"], line["high"], color=color, alpha=0.15
            )
        axis.set_xlabel("1 − α (probability mass the portfolio must reach)")
        axis.set_ylabel(label)
        axis.set_xlim(0, 1)
        axis.legend(fontsize="small", loc="upper left")
    axes[1].set_ylim(-0.02, 1.02)
    axes[0].set_title("portfolio size")
    axes[1].set_title("coverage of correct candidates (problems with one)")
    figure.suptitle(title)
    figure.tight_layout()
    return figure


def plot_holds_correct(summary_by_alpha: pd.DataFrame, title: str) -> plt.Figure:
    """Share of problems whose portfolio holds a correct candidate against 1 − α, beside
    random candidates of the same size, pass@1 and majority vote (flat: they ignore α)."""
    frame = summary_by_alpha.assign(one_minus_alpha=1.0 - summary_by_alpha["alpha"])
    frame = frame.sort_values("one_minus_alpha")
    figure, axis = plt.subplots(figsize=(8, 4.8))
    for kind in EVALUATORS.values():
        evaluator, evaluator_label, color = kind.name, kind.label, kind.color
        line = frame[frame["evaluator"] == evaluator]
        axis.plot(
            line["one_minus_alpha"],
            line["share_portfolio_holds_correct"],
            color=color,
            label=f"portfolio, {evaluator_label}",
        )
        axis.plot(
            line["one_minus_alpha"],
            line["share_random_holds_correct"],
            color=color,
            linestyle=":",
            label=f"random distinct candidates, same size as the {evaluator_label} portfolio",
        )
        if "share_sample_holds_correct" in line:
            axis.plot(
                line["one_minus_alpha"],
                line["share_sample_holds_correct"],
                color=color,
                linestyle="--",
                alpha=0.6,
                label=f"random raw samples, same size as the {evaluator_label} portfolio",
            )
    baselines = {
        "mean_pass_at_1": ("pass@1", "black", "--"),
        "share_majority_vote_correct": ("majority vote", "tab:red", "-."),
    }
    for column, (label, color, style) in baselines.items():
        value = frame[column].dropna()
        if len(value):
            level = float(value.iloc[0])
            axis.axhline(level, color=color, linestyle=style, label=f"{label} ({level:.2f})")
    axis.set_xlabel("1 − α (probability mass the portfolio must reach)")
    axis.set_ylabel("share of problems with a correct candidate")
    axis.set_xlim(0, 1)
    axis.set_ylim(-0.02, 1.02)
    axis.legend(fontsize="small", loc="lower right")
    axis.set_title(title)
    figure.tight_layout()
    return figure


RUN_FIGURES = (
    "fig5_min_judge_kde",
    "size_and_coverage_vs_confidence",
    "holds_correct_vs_confidence",
)


def plot_run(
    fixed_size: pd.DataFrame,
    coverage: pd.DataFrame,
    summary_by_alpha: pd.DataFrame,
    run_id: str,
    problems: int,
    sizes: Sequence[int] = (),
) -> dict[str, plt.Figure]:
    """The run's three figures, by name (the PNG file stem)."""
    with_truth = int(coverage.drop_duplicates("problem_id")["has_ground_truth"].fillna(False).sum())
    return {
        "fig5_min_judge_kde": plot_fig5_min_judge(
            fixed_size,
            f"Minimum judge score: portfolio of the best s vs s random candidates "
            f"(run {run_id}, {problems} problems)",
            sizes,
        ),
        "size_and_coverage_vs_confidence": plot_size_and_coverage(
            coverage,
            f"Portfolio size and coverage of correct candidates against 1 − α "
            f"(run {run_id}, {problems} problems, {with_truth} with a ground truth)",
        ),
        "holds_correct_vs_confidence": plot_holds_correct(
            summary_by_alpha,
            f"Problems whose portfolio holds a correct candidate\n"
            f"(run {run_id}, {with_truth} problems with a ground truth)",
        ),
    }


def save_figures(figures: dict[str, plt.Figure], out_dir: Path) -> list[Path]:
    """Write each figure as ``<out_dir>/<name>.png`` (atomically) and close it."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, figure in figures.items():
        path = out_dir / f"{name}.png"
        with atomic_path(path) as temp:
            figure.savefig(temp, dpi=110, format="png")
        plt.close(figure)
        written.append(path)
    return written
