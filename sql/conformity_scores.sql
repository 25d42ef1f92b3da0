-- Conformal calibration's conformity values (optfolio/calibration.py), one row per ranking
-- (run, problem, unit, evaluator):
--   first_correct_rank        : the best rank of a valid correct unit (null: none is correct)
--   mass_before_first_correct : cum_p of the rank before it (0 at rank 1)
--   alpha_sup                 : 1 − that mass, the supremum of the α whose portfolio still
--                               holds a correct unit: Eq. 2 keeps rank r ≥ 2 exactly when
--                               cum_p(r − 1) < 1 − α − tolerance; rank 1 is kept at every α.
--                               Null ("never") when no valid unit is correct.
-- A problem without ground truth keeps its rows (has_ground_truth false, the rest null), so
-- calibration can say how many it left out.

with

ranked_units as (
    select * from unit_rankings
),

outcomes as (
    select * from unit_outcomes
),

ranked_units_with_outcomes as (
    select
        ranked_units.run_id,
        ranked_units.problem_id,
        ranked_units.unit,
        ranked_units.evaluator,
        ranked_units.rank,
        ranked_units.valid,
        outcomes.objective_truth,
        outcomes.correct
    from ranked_units
    left join outcomes
        on ranked_units.run_id = outcomes.run_id
        and ranked_units.problem_id = outcomes.problem_id
        and ranked_units.unit = outcomes.unit
        and ranked_units.unit_id = outcomes.unit_id
),

first_correct_ranks as (
    select
        run_id,
        problem_id,
        unit,
        evaluator,
        bool_or(objective_truth is not null) as has_ground_truth,
        min(rank) filter (where valid and correct) as first_correct_rank
    from ranked_units_with_outcomes
    group by run_id, problem_id, unit, evaluator
),

masses_before_first_correct as (
    select
        first_correct_ranks.*,
        case
            when first_correct_ranks.first_correct_rank is null then null
            when first_correct_ranks.first_correct_rank = 1 then 0.0
            else preceding_units.cum_p
        end as mass_before_first_correct
    from first_correct_ranks
    left join ranked_units as preceding_units
        on first_correct_ranks.run_id = preceding_units.run_id
        and first_correct_ranks.problem_id = preceding_units.problem_id
        and first_correct_ranks.unit = preceding_units.unit
        and first_correct_ranks.evaluator = preceding_units.evaluator
        and first_correct_ranks.first_correct_rank - 1 = preceding_units.rank
)

select
    run_id,
    problem_id,
    unit,
    evaluator,
    has_ground_truth,
    first_correct_rank,
    mass_before_first_correct,
    1.0 - mass_before_first_correct as alpha_sup
from masses_before_first_correct
