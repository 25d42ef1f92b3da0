"""The portfolio math's reference implementation: Eq. 2, coverage and their edges."""

from __future__ import annotations

import pytest

from optfolio.errors import InputError
from optfolio.portfolio import (
    MASS_TOLERANCE,
    Candidate,
    coverage,
    normalize,
    portfolio_size,
    portfolios,
    probability_method_used,
    rank_by_evaluator,
    tie_break_key,
    weights_from_logprobs,
)


def ids(portfolio) -> list[str]:
    return list(portfolio.members)


def test_alpha_zero_takes_every_candidate_with_mass() -> None:
    candidates = [
        Candidate("a", 0.5, scores=[90]),
        Candidate("b", 0.5, scores=[80]),
        Candidate("c", 0.0, scores=[10]),  # no mass: never needed to reach 1
    ]
    (portfolio,) = portfolios(candidates, [0.0], seed=0)
    assert ids(portfolio) == ["a", "b"]
    assert portfolio.target_reached


def test_accumulated_rounding_counts_as_reaching_one() -> None:
    # 0.1 summed ten times is 0.9999999999999999 in floating point
    assert portfolio_size([0.1] * 10, [True] * 10, alpha=0.0) == (10, True)
    # and a mass short of 1 by less than the tolerance still reaches 1 − 0
    short = 1.0 - MASS_TOLERANCE / 2
    assert portfolio_size([short, 1.0 - short], [True, True], alpha=0.0) == (1, True)


def test_sum_of_point_nine_nine_nine_nine_nine_nine_nine_reaches_one_after_normalizing() -> None:
    candidates = [Candidate(str(i), 0.3333333, scores=[50 - i]) for i in range(3)]
    (portfolio,) = portfolios(candidates, [0.0], seed=0)
    assert portfolio.size == 3 and portfolio.target_reached


def test_alpha_one_and_near_one_give_the_best_candidate_only() -> None:
    candidates = [Candidate(c, w, scores=[s]) for c, w, s in [("a", 1, 10), ("b", 5, 90)]]
    for alpha in (1.0, 0.999999):
        (portfolio,) = portfolios(candidates, [alpha], seed=0)
        assert ids(portfolio) == ["b"]


def test_unnormalized_probabilities_are_normalized_over_the_candidate_set() -> None:
    raw = [Candidate("a", 3.0, scores=[90]), Candidate("b", 1.0, scores=[80])]
    scaled = [Candidate("a", 0.75, scores=[90]), Candidate("b", 0.25, scores=[80])]
    alphas = [0.0, 0.2, 0.25, 0.3, 0.5]
    assert portfolios(raw, alphas, seed=1) == portfolios(scaled, alphas, seed=1)
    assert normalize([3.0, 1.0]).tolist() == [0.75, 0.25]
    # α = 0.25: the best candidate holds exactly 0.75 = 1 − α
    assert ids(portfolios(raw, [0.25], seed=1)[0]) == ["a"]
    assert ids(portfolios(raw, [0.2], seed=1)[0]) == ["a", "b"]


def test_ties_are_broken_by_a_seeded_reproducible_hash() -> None:
    candidates = [Candidate(f"c{i}", 1.0, scores=[50]) for i in range(8)]
    order = [c.candidate_id for c in rank_by_evaluator(candidates, seed=7)]
    again = [c.candidate_id for c in rank_by_evaluator(list(reversed(candidates)), seed=7)]
    assert order == again
    assert order == sorted(order, key=lambda cid: tie_break_key(7, cid))
    orders = {
        tuple(c.candidate_id for c in rank_by_evaluator(candidates, seed=s)) for s in range(5)
    }
    assert len(orders) > 1, "different seeds should break ties differently"


def test_one_candidate_is_its_own_portfolio_at_every_alpha() -> None:
    result = portfolios([Candidate("only", 0.2, scores=[3])], [0.0, 0.5, 1.0], seed=0)
    assert [ids(p) for p in result] == [["only"]] * 3
    assert all(p.target_reached for p in result)


def test_invalid_candidate_carries_mass_but_never_enters_a_portfolio() -> None:
    candidates = [
        Candidate("good", 0.6, scores=[80]),
        Candidate("bottom", 0.4, valid=False, scores=[100]),  # ⊥, even if scored high
    ]
    strict, loose = portfolios(candidates, [0.1, 0.4], seed=0)
    assert ids(strict) == ["good"] and not strict.target_reached  # 0.6 < 0.9: cannot reach
    assert ids(loose) == ["good"] and loose.target_reached


def test_no_valid_candidate_gives_an_empty_portfolio() -> None:
    (portfolio,) = portfolios([Candidate("bottom", 1.0, valid=False)], [0.5], seed=0)
    assert portfolio.size == 0 and not portfolio.target_reached


def test_missing_scores_rank_after_present_ones() -> None:
    candidates = [Candidate("unscored", 0.9, scores=[None]), Candidate("scored", 0.1, scores=[1])]
    assert [c.candidate_id for c in rank_by_evaluator(candidates, seed=0)] == ["scored", "unscored"]


@pytest.mark.parametrize("alpha", [-0.1, 1.5, float("nan")])
def test_alpha_outside_the_unit_interval_is_refused(alpha: float) -> None:
    with pytest.raises(InputError, match="alpha"):
        portfolios([Candidate("a", 1.0)], [alpha], seed=0)


def test_negative_or_zero_weights_are_refused() -> None:
    with pytest.raises(InputError):
        normalize([1.0, -1.0])
    with pytest.raises(InputError):
        normalize([0.0, 0.0])


def test_coverage_counts_members_inside_the_human_top() -> None:
    human = {"a": 1, "b": 2, "c": 3, "d": 4}
    assert coverage(["a", "b"], human) == 1.0
    assert coverage(["a", "c"], human) == 0.5
    assert coverage(["d"], human) == 0.0
    assert coverage([], human) is None


def test_probability_methods() -> None:
    sums, means, counts = [-10.0, -30.0], [-1.0, -1.5], [3, 1]
    length = normalize(weights_from_logprobs(sums, means, counts, "length_normalized"))
    sequence = normalize(weights_from_logprobs(sums, means, counts, "sequence"))
    frequency = normalize(weights_from_logprobs(sums, means, counts, "frequency"))
    # a text sampled 3 times is 3 samples of the generator: 3 × its probability
    assert length[0] == pytest.approx(3 / (3 + 2.718281828459045**-0.5))
    assert sequence[1] == pytest.approx(2.718281828459045**-20 / 3, rel=1e-6)
    assert frequency.tolist() == [0.75, 0.25]
    # an endpoint without log-probs: the problem falls back to frequencies
    fallback = normalize(weights_from_logprobs([None, -3.0], [None, -1.0], counts))
    assert fallback.tolist() == [0.75, 0.25]
    assert probability_method_used([None, -3.0], [None, -1.0]) == "frequency"
    assert probability_method_used(sums, means, "sequence") == "sequence"
    # very long texts: exp of the raw sum would underflow to 0/0
    assert normalize(weights_from_logprobs([-5000.0, -5001.0], [-1, -1], [1, 1], "sequence"))[
        0
    ] == pytest.approx(1 / (1 + 2.718281828459045**-1))
