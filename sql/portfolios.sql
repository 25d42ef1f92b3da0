-- Eq. 2 on the whole α grid in one pass: the portfolio for α is the k*(α) best-ranked
-- candidates, k*(α) = min{k ≥ 1 : cum_p(k) ≥ 1 − α − mass_tolerance}, valid candidates only.
-- A candidate is in it when it is rank 1, or the mass ranked above it is still short of the
-- target. The comparison is written exactly as in optfolio/portfolio.py so both round alike.

with

ranked_candidates as (
    select * from rankings
),

alphas as (
    select alpha from alpha_grid
),

settings as (
    select mass_tolerance from run_settings
),

mass_ranked_above as (
    select
        *,
        coalesce(
            lag(cum_p) over (partition by run_id, problem_id, evaluator order by rank), 0.0
        ) as mass_above
    from ranked_candidates
    where valid
),

portfolio_members as (
    select
        mass_ranked_above.run_id,
        mass_ranked_above.problem_id,
        mass_ranked_above.evaluator,
        alphas.alpha,
        mass_ranked_above.candidate_id,
        mass_ranked_above.rank,
        mass_ranked_above.p,
        mass_ranked_above.cum_p
    from mass_ranked_above
    cross join settings
    inner join alphas
        on mass_ranked_above.rank = 1
        or mass_ranked_above.mass_above < 1.0 - alphas.alpha - settings.mass_tolerance
),

with_portfolio_totals as (
    select
        portfolio_members.*,
        count(*) over portfolio as portfolio_size,
        max(cum_p) over portfolio >= 1.0 - alpha - settings.mass_tolerance as target_reached
    from portfolio_members
    cross join settings
    window portfolio as (partition by run_id, problem_id, evaluator, alpha)
)

select
    run_id,
    problem_id,
    evaluator,
    alpha,
    candidate_id,
    rank,
    p,
    portfolio_size,
    target_reached
from with_portfolio_totals
