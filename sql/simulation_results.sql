-- The simulated study's result (§4.1, App. B.1): one row per (K, generator, evaluator error,
-- seed, α) with the portfolio size and coverage under the simulated LLM evaluator: the
-- simulation writes its evaluator's ranking as score samples, so the evaluator kind that
-- ranks by the mean score (`evaluators`, registered from optfolio.evaluators) reports it.

with

simulated_evaluator as (
    select evaluator from evaluators
    where ranked_by = 'mean_score'
),

portfolio_coverage_rows as (
    select * from portfolio_coverage
    where evaluator in (select evaluator from simulated_evaluator)
),

simulated_designs as (
    select * from sim_configs
),

results as (
    select
        simulated_designs.K,
        simulated_designs.generator,
        simulated_designs.evaluator_error,
        simulated_designs.seed,
        portfolio_coverage_rows.alpha,
        portfolio_coverage_rows.portfolio_size,
        portfolio_coverage_rows.coverage
    from portfolio_coverage_rows
    inner join simulated_designs
        on portfolio_coverage_rows.run_id = simulated_designs.run_id
        and portfolio_coverage_rows.problem_id = simulated_designs.problem_id
)

select * from results
order by K, generator, evaluator_error, seed, alpha
