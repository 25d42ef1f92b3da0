-- Portfolio quality per (run, problem, unit, evaluator) and either an α of the grid (basis
-- 'alpha', size = k*(α)) or a fixed size s of the size grid (basis 'size', the best s units);
-- unit 'candidate' (the paper's portfolios) or 'answer' (portfolios of distinct answers):
--   portfolio_min_judge   : the lowest judge score in the portfolio (the reviewer may pick it;
--                           unknown when a member has no parsed judge score)
--   portfolio_holds_correct(_orlm) : some member is correct
--   random_min_judge, random_holds_correct : the same for random s-subsets of distinct valid
--                           units, averaged over the seeded draws of random_portfolios
--   sample_min_judge, sample_holds_correct : the same for s raw generator samples drawn at
--                           random (random_samples: the paper's "prompting multiple times")
--   pass_at_1, pass_at_size, majority_vote_correct : the usual baselines for this problem;
--   pass@s = 1 − C(n − c, s) / C(n, s) over n samples of which c are correct.
--   calibrated            : this α is the run's calibrated α̂ (optfolio calibrate), for the
--                           evaluator and unit it was calibrated for
-- Sizes larger than the problem's valid units are left out of the 'size' basis.

with

sizes_on_alpha_grid as (
    select * from unit_portfolio_sizes
),

prefix_quality as (
    select * from ranked_outcomes
),

random_unit_quality as (
    select * from random_portfolios
),

random_sample_quality as (
    select * from random_samples
),

baselines as (
    select * from problem_baselines
),

requested_sizes as (
    select s from size_grid
),

calibration as (
    select calibrated_alpha, calibrated_evaluator, calibrated_unit from run_settings
),

valid_units_per_ranking as (
    select
        run_id,
        problem_id,
        unit,
        evaluator,
        count(*) filter (where valid) as valid_units
    from unit_rankings
    group by run_id, problem_id, unit, evaluator
),

random_quality_by_size as (
    select
        run_id,
        problem_id,
        unit,
        size,
        -- Ordered: a float mean must not depend on how DuckDB's threads split the rows.
        avg(min_judge_score order by draw) as random_min_judge,
        avg(case when holds_correct then 1.0 when not holds_correct then 0.0 end)
            as random_holds_correct,
        avg(case when holds_correct_orlm then 1.0 when not holds_correct_orlm then 0.0 end)
            as random_holds_correct_orlm
    from random_unit_quality
    group by run_id, problem_id, unit, size
),

sample_quality_by_size as (
    select
        run_id,
        problem_id,
        size,
        avg(min_judge_score order by draw) as sample_min_judge,
        avg(case when holds_correct then 1.0 when not holds_correct then 0.0 end)
            as sample_holds_correct,
        avg(case when holds_correct_orlm then 1.0 when not holds_correct_orlm then 0.0 end)
            as sample_holds_correct_orlm
    from random_sample_quality
    group by run_id, problem_id, size
),

portfolios_to_judge as (
    select
        run_id,
        problem_id,
        unit,
        evaluator,
        'alpha' as basis,
        alpha,
        portfolio_size as size
    from sizes_on_alpha_grid

    union all

    select
        valid_units_per_ranking.run_id,
        valid_units_per_ranking.problem_id,
        valid_units_per_ranking.unit,
        valid_units_per_ranking.evaluator,
        'size' as basis,
        null as alpha,
        requested_sizes.s as size
    from valid_units_per_ranking
    cross join requested_sizes
    where requested_sizes.s <= valid_units_per_ranking.valid_units
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
        sample_quality_by_size.sample_min_judge,
        sample_quality_by_size.sample_holds_correct,
        sample_quality_by_size.sample_holds_correct_orlm,
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
        baselines.majority_vote_correct,
        coalesce(
            portfolios_to_judge.basis = 'alpha'
            and portfolios_to_judge.evaluator = calibration.calibrated_evaluator
            and portfolios_to_judge.unit = calibration.calibrated_unit
            and portfolios_to_judge.alpha = calibration.calibrated_alpha,
            false
        ) as calibrated
    from portfolios_to_judge
    cross join calibration
    left join prefix_quality
        on portfolios_to_judge.run_id = prefix_quality.run_id
        and portfolios_to_judge.problem_id = prefix_quality.problem_id
        and portfolios_to_judge.unit = prefix_quality.unit
        and portfolios_to_judge.evaluator = prefix_quality.evaluator
        and portfolios_to_judge.size = prefix_quality.rank
    left join random_quality_by_size
        on portfolios_to_judge.run_id = random_quality_by_size.run_id
        and portfolios_to_judge.problem_id = random_quality_by_size.problem_id
        and portfolios_to_judge.unit = random_quality_by_size.unit
        and portfolios_to_judge.size = random_quality_by_size.size
    left join sample_quality_by_size
        on portfolios_to_judge.run_id = sample_quality_by_size.run_id
        and portfolios_to_judge.problem_id = sample_quality_by_size.problem_id
        and portfolios_to_judge.size = sample_quality_by_size.size
    left join baselines
        on portfolios_to_judge.run_id = baselines.run_id
        and portfolios_to_judge.problem_id = baselines.problem_id
)

select * from judged
