-- One row per (run, problem, evaluator, α): portfolio size, whether 1 − α was reached, and
-- coverage c(P) (Def. 3.4) where a human ranking is known: the share of the portfolio that
-- lies in the human top-|P|. Empty portfolios (no valid candidate) appear with size 0.

with

portfolio_members as (
    select * from portfolios
),

ranked_candidates as (
    select * from rankings
),

candidate_human_ranks as (
    select run_id, problem_id, candidate_id, human_rank from candidates
),

alphas as (
    select alpha from alpha_grid
),

evaluated_problems as (
    select distinct run_id, problem_id, evaluator from ranked_candidates
),

problem_alpha_grid as (
    select evaluated_problems.*, alphas.alpha
    from evaluated_problems
    cross join alphas
),

members_with_human_rank as (
    select
        portfolio_members.*,
        candidate_human_ranks.human_rank
    from portfolio_members
    left join candidate_human_ranks
        on portfolio_members.run_id = candidate_human_ranks.run_id
        and portfolio_members.problem_id = candidate_human_ranks.problem_id
        and portfolio_members.candidate_id = candidate_human_ranks.candidate_id
),

portfolio_summaries as (
    select
        run_id,
        problem_id,
        evaluator,
        alpha,
        max(portfolio_size) as portfolio_size,
        bool_and(target_reached) as target_reached,
        -- coverage needs every member's human rank; null when any is unknown
        case
            when count(human_rank) = count(*)
                then avg(case when human_rank <= portfolio_size then 1.0 else 0.0 end)
        end as coverage
    from members_with_human_rank
    group by run_id, problem_id, evaluator, alpha
),

coverage_on_grid as (
    select
        problem_alpha_grid.run_id,
        problem_alpha_grid.problem_id,
        problem_alpha_grid.evaluator,
        problem_alpha_grid.alpha,
        coalesce(portfolio_summaries.portfolio_size, 0) as portfolio_size,
        coalesce(portfolio_summaries.target_reached, false) as target_reached,
        portfolio_summaries.coverage
    from problem_alpha_grid
    left join portfolio_summaries
        on problem_alpha_grid.run_id = portfolio_summaries.run_id
        and problem_alpha_grid.problem_id = portfolio_summaries.problem_id
        and problem_alpha_grid.evaluator = portfolio_summaries.evaluator
        and problem_alpha_grid.alpha = portfolio_summaries.alpha
)

select * from coverage_on_grid
