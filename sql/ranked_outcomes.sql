-- Each ranking's valid candidates in order, with what the best-k of them hold for every k:
-- the lowest judge score among them (a reviewer might pick the worst) and whether one is
-- correct. Portfolios are ranking prefixes, so their quality is read off at rank k*.

with

ranked_candidates as (
    select * from rankings
    where valid
),

outcomes as (
    select * from candidate_outcomes
),

ranked_with_outcomes as (
    select
        ranked_candidates.run_id,
        ranked_candidates.problem_id,
        ranked_candidates.evaluator,
        ranked_candidates.rank,
        ranked_candidates.candidate_id,
        outcomes.judge_score,
        outcomes.correct,
        outcomes.correct_orlm
    from ranked_candidates
    inner join outcomes
        on ranked_candidates.run_id = outcomes.run_id
        and ranked_candidates.problem_id = outcomes.problem_id
        and ranked_candidates.candidate_id = outcomes.candidate_id
),

prefix_quality as (
    select
        *,
        min(judge_score) over best_k as min_judge_score,
        bool_or(correct) over best_k as holds_correct,
        bool_or(correct_orlm) over best_k as holds_correct_orlm
    from ranked_with_outcomes
    window best_k as (
        partition by run_id, problem_id, evaluator
        order by rank
        rows between unbounded preceding and current row
    )
)

select * from prefix_quality
