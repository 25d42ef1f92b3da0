-- How many of a problem's correct candidates each portfolio on the α grid holds, one row per
-- (run, problem, evaluator, α): coverage with correctness against the ground truth standing
-- in for the human ranking, which real runs do not have.
--   correct_candidates      : the problem's valid candidates that are correct
--   correct_in_portfolio    : those among the k*(α) members
--   correct_covered         : correct_in_portfolio / correct_candidates
--                             (null without a ground truth or without a correct candidate)
--   portfolio_share_correct : correct_in_portfolio / portfolio_size
--                             (null without a ground truth or for an empty portfolio)

with

sizes as (
    select * from portfolio_sizes
),

members as (
    select * from portfolios
),

outcomes as (
    select * from candidate_outcomes
),

correct_per_problem as (
    select
        run_id,
        problem_id,
        bool_or(objective_truth is not null) as has_ground_truth,
        count(*) filter (where valid and correct) as correct_candidates
    from outcomes
    group by run_id, problem_id
),

correct_per_portfolio as (
    select
        members.run_id,
        members.problem_id,
        members.evaluator,
        members.alpha,
        count(*) filter (where outcomes.correct) as correct_in_portfolio
    from members
    inner join outcomes
        on members.run_id = outcomes.run_id
        and members.problem_id = outcomes.problem_id
        and members.candidate_id = outcomes.candidate_id
    group by members.run_id, members.problem_id, members.evaluator, members.alpha
),

coverage_of_correct as (
    select
        sizes.run_id,
        sizes.problem_id,
        sizes.evaluator,
        sizes.alpha,
        sizes.portfolio_size,
        sizes.target_reached,
        correct_per_problem.has_ground_truth,
        correct_per_problem.correct_candidates,
        coalesce(correct_per_portfolio.correct_in_portfolio, 0) as correct_in_portfolio,
        case
            when not correct_per_problem.has_ground_truth
                or correct_per_problem.correct_candidates = 0 then null
            else coalesce(correct_per_portfolio.correct_in_portfolio, 0)
                / correct_per_problem.correct_candidates
        end as correct_covered,
        case
            when not correct_per_problem.has_ground_truth or sizes.portfolio_size = 0 then null
            else coalesce(correct_per_portfolio.correct_in_portfolio, 0) / sizes.portfolio_size
        end as portfolio_share_correct
    from sizes
    left join correct_per_portfolio
        on sizes.run_id = correct_per_portfolio.run_id
        and sizes.problem_id = correct_per_portfolio.problem_id
        and sizes.evaluator = correct_per_portfolio.evaluator
        and sizes.alpha = correct_per_portfolio.alpha
    left join correct_per_problem
        on sizes.run_id = correct_per_problem.run_id
        and sizes.problem_id = correct_per_problem.problem_id
)

select * from coverage_of_correct
