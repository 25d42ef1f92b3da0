-- k*(α) of every candidate-level portfolio: the candidate unit of unit_portfolio_sizes.

with

sizes_of_every_unit as (
    select * from unit_portfolio_sizes
),

candidate_portfolio_sizes as (
    select
        run_id,
        problem_id,
        evaluator,
        alpha,
        portfolio_size,
        target_reached
    from sizes_of_every_unit
    where unit = 'candidate'
)

select * from candidate_portfolio_sizes
