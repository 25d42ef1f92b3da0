-- Every candidate's rank under each evaluator kind, best first: the candidate unit of
-- unit_rankings (see there for the ranking rules).

with

ranked_units as (
    select * from unit_rankings
),

candidate_rankings as (
    select
        run_id,
        problem_id,
        evaluator,
        candidate_id,
        rank,
        p,
        valid,
        ranking_score,
        cum_p
    from ranked_units
    where unit = 'candidate'
)

select * from candidate_rankings
