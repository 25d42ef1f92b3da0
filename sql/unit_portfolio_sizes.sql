-- Eq. 2 on the whole α grid in one pass, one row per (run, problem, unit, evaluator, α):
--   k*(α) = min{k ≥ 1 : cum_p(k) ≥ target},  target = 1 − α − mass_tolerance,
-- over the valid units in ranking order (they rank before ⊥). As cum_p never decreases,
--   k*(α) = min(valid units, 1 + #{valid k : cum_p(k) < target}),
-- and 1 − α is reached exactly when some valid unit's cum_p is not below the target.
-- The target is computed as in optfolio/portfolio.py, so both round alike.

with

ranked_units as (
    select * from unit_rankings
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

rankings_to_assemble as (
    select distinct run_id, problem_id, unit, evaluator from ranked_units
),

valid_cumulative_masses as (
    -- rankings are short (N candidates): one list per ranking, ascending like cum_p
    select
        run_id,
        problem_id,
        unit,
        evaluator,
        list(cum_p order by rank) as cum_ps
    from ranked_units
    where valid
    group by run_id, problem_id, unit, evaluator
),

candidates_below_each_target as (
    select
        rankings_to_assemble.run_id,
        rankings_to_assemble.problem_id,
        rankings_to_assemble.unit,
        rankings_to_assemble.evaluator,
        alpha_targets.alpha,
        coalesce(len(valid_cumulative_masses.cum_ps), 0) as valid_candidates,
        coalesce(
            len(list_filter(valid_cumulative_masses.cum_ps, lambda c: c < alpha_targets.target)), 0
        ) as candidates_below
    from rankings_to_assemble
    left join valid_cumulative_masses
        on rankings_to_assemble.run_id = valid_cumulative_masses.run_id
        and rankings_to_assemble.problem_id = valid_cumulative_masses.problem_id
        and rankings_to_assemble.unit = valid_cumulative_masses.unit
        and rankings_to_assemble.evaluator = valid_cumulative_masses.evaluator
    cross join alpha_targets
),

portfolio_sizes as (
    select
        run_id,
        problem_id,
        unit,
        evaluator,
        alpha,
        least(1 + candidates_below, valid_candidates) as portfolio_size,
        candidates_below < valid_candidates as target_reached
    from candidates_below_each_target
)

select * from portfolio_sizes
