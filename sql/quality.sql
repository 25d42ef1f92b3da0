-- Portfolio quality per (run, problem, evaluator) and either an α of the grid (basis 'alpha',
-- size = k*(α)) or a fixed size s of the size grid (basis 'size', the best s candidates):
--   portfolio_min_judge   : the lowest judge score in the portfolio (the reviewer may pick it)
--   portfolio_holds_correct(_orlm) : some member is correct
--   random_min_judge, random_holds_correct : the same for random s-subsets, averaged over the
--                           seeded draws of random_portfolios
--   pass_at_1, pass_at_size, majority_vote_correct : the usual baselines for this problem;
--   pass@s = 1 − C(n − c, s) / C(n, s) over n samples of which c are correct.
-- Sizes larger than the problem's valid candidates are left out of the 'size' basis.

with

sizes_on_alpha_grid as (
    select * from portfolio_sizes
),

prefix_quality as (
    select * from ranked_outcomes
),

random_prefix_quality as (
    select * from random_portfolios
),

baselines as (
    select * from problem_baselines
),

requested_sizes as (
    select s from size_grid
),

valid_candidates_per_ranking as (
    select
        run_id,
        problem_id,
        evaluator,
        count(*) filter (where valid) as valid_candidates
    from rankings
    group by run_id, problem_id, evaluator
),

random_quality_by_size as (
    select
        run_id,
        problem_id,
        size,
        avg(min_judge_score) as random_min_judge,
        avg(case when holds_correct then 1.0 when not holds_correct then 0.0 end)
            as random_holds_correct,
        avg(case when holds_correct_orlm then 1.0 when not holds_correct_orlm then 0.0 end)
            as random_holds_correct_orlm
    from random_prefix_quality
    group by run_id, problem_id, size
),

portfolios_to_judge as (
    select
        run_id,
        problem_id,
        evaluator,
        'alpha' as basis,
        alpha,
        portfolio_size as size
    from sizes_on_alpha_grid

    union all

    select
        valid_candidates_per_ranking.run_id,
        valid_candidates_per_ranking.problem_id,
        valid_candidates_per_ranking.evaluator,
        'size' as basis,
        null as alpha,
        requested_sizes.s as size
    from valid_candidates_per_ranking
    cross join requested_sizes
    where requested_sizes.s <= valid_candidates_per_ranking.valid_candidates
),

judged as (
    select
        portfolios_to_judge.*,
        prefix_quality.min_judge_score as portfolio_min_judge,
        prefix_quality.holds_correct as portfolio_holds_correct,
        prefix_quality.holds_correct_orlm as portfolio_holds_correct_orlm,
        random_quality_by_size.random_min_judge,
        random_quality_by_size.random_holds_correct,
        random_quality_by_size.random_holds_correct_orlm,
        baselines.has_ground_truth,
        baselines.samples,
        baselines.correct_samples,
        baselines.pass_at_1,
        case
            when not baselines.has_ground_truth or portfolios_to_judge.size > baselines.samples
                then null
            when baselines.correct_samples = 0 then 0.0
            when baselines.samples - baselines.correct_samples < portfolios_to_judge.size
                then 1.0
            else 1.0 - exp(
                lgamma(baselines.samples - baselines.correct_samples + 1)
                - lgamma(baselines.samples - baselines.correct_samples - portfolios_to_judge.size + 1)
                - lgamma(baselines.samples + 1)
                + lgamma(baselines.samples - portfolios_to_judge.size + 1)
            )
        end as pass_at_size,
        baselines.majority_vote_correct
    from portfolios_to_judge
    left join prefix_quality
        on portfolios_to_judge.run_id = prefix_quality.run_id
        and portfolios_to_judge.problem_id = prefix_quality.problem_id
        and portfolios_to_judge.evaluator = prefix_quality.evaluator
        and portfolios_to_judge.size = prefix_quality.rank
    left join random_quality_by_size
        on portfolios_to_judge.run_id = random_quality_by_size.run_id
        and portfolios_to_judge.problem_id = random_quality_by_size.problem_id
        and portfolios_to_judge.size = random_quality_by_size.size
    left join baselines
        on portfolios_to_judge.run_id = baselines.run_id
        and portfolios_to_judge.problem_id = baselines.problem_id
)

select * from judged
