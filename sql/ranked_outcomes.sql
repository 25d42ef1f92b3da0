-- Each ranking's valid units in order, with what the best-k of them hold for every k: the
-- lowest judge score among them (a reviewer might pick the worst; unknown when one of them
-- has no parsed judge score) and whether one is correct. Portfolios are ranking prefixes,
-- so their quality is read off at rank k*. Both units: candidates and answers.

with

ranked_units as (
    select * from unit_rankings
    where valid
),

outcomes as (
    select * from unit_outcomes
),

ranked_with_outcomes as (
    select
        ranked_units.run_id,
        ranked_units.problem_id,
        ranked_units.unit,
        ranked_units.evaluator,
        ranked_units.rank,
        ranked_units.unit_id,
        ranked_units.candidate_id,
        outcomes.judge_score,
        outcomes.correct,
        outcomes.correct_orlm
    from ranked_units
    inner join outcomes
        on ranked_units.run_id = outcomes.run_id
        and ranked_units.problem_id = outcomes.problem_id
        and ranked_units.unit = outcomes.unit
        and ranked_units.unit_id = outcomes.unit_id
),

prefix_quality as (
    select
        *,
        case
            when count(judge_score) over best_k = count(*) over best_k
                then min(judge_score) over best_k
        end as min_judge_score,
        bool_or(correct) over best_k as holds_correct,
        bool_or(correct_orlm) over best_k as holds_correct_orlm
    from ranked_with_outcomes
    window best_k as (
        partition by run_id, problem_id, unit, evaluator
        order by rank
        rows between unbounded preceding and current row
    )
)

select * from prefix_quality
