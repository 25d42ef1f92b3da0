-- Portfolio members, one row per (run, problem, evaluator, α, candidate): the k*(α)
-- best-ranked candidates of portfolio_sizes (valid candidates rank first, so ranks 1..k*).

with

ranked_candidates as (
    select * from rankings
),

sizes as (
    select * from portfolio_sizes
),

portfolio_members as (
    select
        sizes.run_id,
        sizes.problem_id,
        sizes.evaluator,
        sizes.alpha,
        ranked_candidates.candidate_id,
        ranked_candidates.rank,
        ranked_candidates.p,
        sizes.portfolio_size,
        sizes.target_reached
    from sizes
    inner join ranked_candidates
        on sizes.run_id = ranked_candidates.run_id
        and sizes.problem_id = ranked_candidates.problem_id
        and sizes.evaluator = ranked_candidates.evaluator
        and ranked_candidates.rank <= sizes.portfolio_size
)

select * from portfolio_members
