-- Eq. 2 on the whole α grid in one pass, one row per (run, problem, evaluator, α):
--   k*(α) = min{k ≥ 1 : cum_p(k) ≥ target},  target = 1 − α − mass_tolerance,
-- over the valid candidates in ranking order (they rank before ⊥). As cum_p never decreases,
--   k*(α) = min(valid candidates, 1 + #{valid k : cum_p(k) < target}),
-- and 1 − α is reached exactly when some valid candidate's cum_p is not below the target.
-- The counts come from merging two sorted lists per ranking, the candidates' cum_p and the α
-- targets, targets first on equal values (the comparison is strict). The target is computed
-- as in optfolio/portfolio.py, so both round alike.

with

ranked_candidates as (
    select * from rankings
),

settings as (
    select mass_tolerance from run_settings
),

alpha_targets as (
    select
        alpha,
        1.0 - alpha - settings.mass_tolerance as target
    from alpha_grid
    cross join settings
),

valid_candidates_per_ranking as (
    select
        run_id,
        problem_id,
        evaluator,
        count(*) filter (where valid) as valid_candidates
    from ranked_candidates
    group by run_id, problem_id, evaluator
),

cumulative_masses_and_targets as (
    select
        run_id,
        problem_id,
        evaluator,
        cum_p as value,
        1 as is_candidate,
        null::double as alpha,
        null::bigint as valid_candidates
    from ranked_candidates
    where valid

    union all

    select
        valid_candidates_per_ranking.run_id,
        valid_candidates_per_ranking.problem_id,
        valid_candidates_per_ranking.evaluator,
        alpha_targets.target as value,
        0 as is_candidate,
        alpha_targets.alpha,
        valid_candidates_per_ranking.valid_candidates
    from valid_candidates_per_ranking
    cross join alpha_targets
),

candidates_below_each_target as (
    select
        *,
        sum(is_candidate) over (
            partition by run_id, problem_id, evaluator
            order by value, is_candidate
            rows between unbounded preceding and current row
        ) as candidates_below
    from cumulative_masses_and_targets
),

portfolio_sizes as (
    select
        run_id,
        problem_id,
        evaluator,
        alpha,
        least(1 + candidates_below, valid_candidates) as portfolio_size,
        candidates_below < valid_candidates as target_reached
    from candidates_below_each_target
    where is_candidate = 0
)

select * from portfolio_sizes
