-- The data behind the paper's Fig. 5: the lowest judge score of every fixed-size selection of
-- valid candidates, one row per (run, problem, size s, selection, evaluator, draw):
--   selection 'portfolio' : the evaluator's best s candidates (draw is null)
--   selection 'random'    : one of the seeded random s-subsets of distinct valid candidates
--                           (random_portfolios; evaluator is null: a draw follows no ranking)
--   selection 'samples'   : one of the seeded random draws of s raw generator samples
--                           (random_samples, the paper's "prompting multiple times")
-- Sizes of the size grid only, and only up to the problem's valid candidates, as in quality.

with

best_s_quality as (
    select * from ranked_outcomes
    where unit = 'candidate'
),

random_s_quality as (
    select * from random_portfolios
    where unit = 'candidate'
),

random_s_samples as (
    select * from random_samples
),

requested_sizes as (
    select s from size_grid
),

portfolio_selections as (
    select
        best_s_quality.run_id,
        best_s_quality.problem_id,
        requested_sizes.s as size,
        'portfolio' as selection,
        best_s_quality.evaluator,
        cast(null as bigint) as draw,
        best_s_quality.min_judge_score,
        best_s_quality.holds_correct
    from best_s_quality
    inner join requested_sizes
        on best_s_quality.rank = requested_sizes.s
),

random_selections as (
    select
        random_s_quality.run_id,
        random_s_quality.problem_id,
        requested_sizes.s as size,
        'random' as selection,
        cast(null as varchar) as evaluator,
        random_s_quality.draw,
        random_s_quality.min_judge_score,
        random_s_quality.holds_correct
    from random_s_quality
    inner join requested_sizes
        on random_s_quality.size = requested_sizes.s
),

sample_selections as (
    select
        random_s_samples.run_id,
        random_s_samples.problem_id,
        requested_sizes.s as size,
        'samples' as selection,
        cast(null as varchar) as evaluator,
        random_s_samples.draw,
        random_s_samples.min_judge_score,
        random_s_samples.holds_correct
    from random_s_samples
    inner join requested_sizes
        on random_s_samples.size = requested_sizes.s
)

select * from portfolio_selections
union all
select * from random_selections
union all
select * from sample_selections
