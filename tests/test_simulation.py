"""The simulated study: the paper's generators, evaluators and guarantees (§3, §4.1)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from optfolio import warehouse
from optfolio.errors import InputError
from optfolio.parameters import parse_model
from optfolio.portfolio import coverage_lower_bound
from optfolio.simulation import (
    WEAK_FIRST_HALF_MASS,
    StudyDesign,
    _rng,
    evaluator_ranking,
    generator_probabilities,
    positions_to_change,
    realized_error,
    simulate_problems,
)
from optfolio.store import RunStore

DESIGN = StudyDesign(Ks=(10, 20, 50), seeds=12)


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    store = RunStore(tmp_path_factory.mktemp("sim"))
    for K in DESIGN.Ks:
        for table, data in simulate_problems(K, DESIGN).items():
            store.write_part(table, "sim", f"K{K}", data)
    config = warehouse.AssemblySettings(alphas=DESIGN.alphas)
    with warehouse.connect(store, settings=config) as con:
        return con.sql("select * from simulation_results").df()


def test_grid_has_one_row_per_design_point(results: pd.DataFrame) -> None:
    expected = len(DESIGN.Ks) * 4 * 5 * DESIGN.seeds * 51
    assert len(results) == expected
    assert not results.duplicated(["K", "generator", "evaluator_error", "seed", "alpha"]).any()


def test_corollary_3_5_a_perfect_evaluator_covers_fully_at_every_alpha(results) -> None:
    perfect = results[results["evaluator_error"] == 0.0]
    assert len(perfect) > 0
    assert (perfect["coverage"] == 1.0).all()


def test_proposition_3_6_aligned_generator_bound(results: pd.DataFrame) -> None:
    aligned = results[(results["generator"] == "aligned") & (results["alpha"] < 0.5)]
    bound = [
        coverage_lower_bound(a, s)
        for a, s in zip(aligned["alpha"], aligned["portfolio_size"], strict=True)
    ]
    assert len(aligned) > 0
    assert (aligned["coverage"].to_numpy() > np.array(bound)).all()


def test_portfolio_size_never_grows_with_alpha(results: pd.DataFrame) -> None:
    ordered = results.sort_values(["K", "generator", "evaluator_error", "seed", "alpha"])
    steps = ordered.groupby(["K", "generator", "evaluator_error", "seed"])["portfolio_size"].diff()
    assert (steps.dropna() <= 0).all()
    assert (
        results.loc[results["alpha"] == 0.0, "portfolio_size"]
        == results.loc[results["alpha"] == 0.0, "K"]
    ).all(), "α = 0 needs every candidate (all have mass)"
    assert (results.loc[results["alpha"] == 1.0, "portfolio_size"] == 1).all()


def test_weakly_aligned_generator_puts_its_first_half_mass_in_range() -> None:
    low, high = WEAK_FIRST_HALF_MASS
    masses = []
    for K in (10, 11, 50, 100):
        for seed in range(200):
            p = generator_probabilities("weakly_aligned", K, _rng(seed, K, "weakly_aligned"))
            assert p.sum() == pytest.approx(1.0) and (p > 0).all()
            masses.append(p[: K // 2].sum())
    masses = np.array(masses)
    assert ((masses >= low) & (masses < high)).all()
    # uniform in [0.5, 0.99): spread over the whole interval, mean near its middle
    assert masses.min() < 0.55 and masses.max() > 0.94
    assert masses.mean() == pytest.approx((low + high) / 2, abs=0.02)


@pytest.mark.parametrize("kind", ["aligned", "misaligned", "uniform"])
def test_deterministic_generators(kind: str) -> None:
    p = generator_probabilities(kind, 4, _rng(0))
    expected = {"aligned": [4, 3, 2, 1], "misaligned": [1, 2, 3, 4], "uniform": [1, 1, 1, 1]}
    assert p.tolist() == pytest.approx(np.array(expected[kind]) / sum(expected[kind]))


@pytest.mark.parametrize("K", [10, 20, 50, 100])
@pytest.mark.parametrize("error", [0.0, 0.3, 0.5, 0.7])
def test_realized_evaluator_error_equals_the_requested_one(K: int, error: float) -> None:
    for seed in range(25):
        ranking = evaluator_ranking(error, K, _rng(seed, K, "evaluator", error))
        assert sorted(ranking.tolist()) == list(range(1, K + 1)), "must be a permutation"
        assert realized_error(ranking) == round(error * K) / K


def test_error_one_is_the_reversed_ranking() -> None:
    assert evaluator_ranking(1.0, 5, _rng(0)).tolist() == [5, 4, 3, 2, 1]


def test_impossible_single_position_error_is_refused() -> None:
    with pytest.raises(InputError, match="exactly one position"):
        positions_to_change(0.1, 10)
    with pytest.raises(InputError, match="K=3"):
        parse_model(StudyDesign, {"Ks": [3], "evaluator_errors": [0.3]})


def test_weakly_aligned_coverage_above_the_diagonal_for_small_alpha(results) -> None:
    # The paper's qualitative claim (Fig. 2): with a weakly aligned generator and an imperfect
    # evaluator, mean coverage stays above 1 − α for α < 0.5.
    weak = results[
        (results["generator"] == "weakly_aligned")
        & results["evaluator_error"].isin([0.3, 0.5])
        & (results["alpha"] > 0.02)
        & (results["alpha"] < 0.5)
    ]
    means = weak.groupby(["K", "evaluator_error", "alpha"])["coverage"].mean().reset_index()
    assert (means["coverage"] > 1 - means["alpha"] - 0.05).mean() > 0.9


def test_simulation_is_reproducible() -> None:
    design = StudyDesign(Ks=(10,), seeds=3)
    first, second = simulate_problems(10, design), simulate_problems(10, design)
    for table in first:
        assert first[table].equals(second[table])


def test_results_match_the_cli_contract_columns(results: pd.DataFrame) -> None:
    from tests.test_simulate_flow import CONTRACT_COLUMNS

    assert list(results.columns) == CONTRACT_COLUMNS
    assert set(results["generator"]) == {"aligned", "weakly_aligned", "uniform", "misaligned"}
