-- Which candidates make each unit a portfolio can be built from, one row per (run, problem,
-- unit, unit_id, candidate):
--   unit 'candidate' : every candidate alone (unit_id = candidate_id)
--   unit 'answer'    : valid candidates whose code ran ok with a finite objective, grouped by
--                      objective: sorted by (objective, candidate_id), a candidate joins the
--                      previous one's answer when |a − b| ≤ correct_rel_tol · max(|a|, |b|, 1)
--                      (a chain, as optfolio/portfolio.py group_answers); any other candidate,
--                      ⊥ included, is an answer of its own. answer_id = 'answer-' || the least
--                      member candidate_id.

with

candidate_probabilities as (
    select * from candidates
),

execution_rows as (
    select * from executions
),

settings as (
    select correct_rel_tol from run_settings
),

candidates_with_objectives as (
    select
        candidate_probabilities.run_id,
        candidate_probabilities.problem_id,
        candidate_probabilities.candidate_id,
        candidate_probabilities.valid
            and execution_rows.status = 'ok'
            and execution_rows.objective is not null
            and isfinite(execution_rows.objective) as groupable,
        execution_rows.objective
    from candidate_probabilities
    left join execution_rows
        on candidate_probabilities.run_id = execution_rows.run_id
        and candidate_probabilities.problem_id = execution_rows.problem_id
        and candidate_probabilities.candidate_id = execution_rows.candidate_id
),

objective_neighbours as (
    select
        run_id,
        problem_id,
        candidate_id,
        objective,
        lag(objective) over objective_order as previous_objective
    from candidates_with_objectives
    where groupable
    window objective_order as (
        partition by run_id, problem_id order by objective, candidate_id
    )
),

answer_starts as (
    select
        objective_neighbours.*,
        case
            when previous_objective is null then 1
            when abs(objective - previous_objective)
                <= settings.correct_rel_tol
                * greatest(abs(objective), abs(previous_objective), 1.0)
                then 0
            else 1
        end as starts_answer
    from objective_neighbours
    cross join settings
),

numbered_answers as (
    select
        *,
        sum(starts_answer) over (
            partition by run_id, problem_id
            order by objective, candidate_id
            rows between unbounded preceding and current row
        ) as answer_number
    from answer_starts
),

grouped_answer_members as (
    select
        run_id,
        problem_id,
        'answer-' || min(candidate_id) over (
            partition by run_id, problem_id, answer_number
        ) as unit_id,
        candidate_id
    from numbered_answers
),

single_answer_members as (
    select
        run_id,
        problem_id,
        'answer-' || candidate_id as unit_id,
        candidate_id
    from candidates_with_objectives
    where not coalesce(groupable, false)
),

unit_membership as (
    select run_id, problem_id, 'candidate' as unit, candidate_id as unit_id, candidate_id
    from candidate_probabilities

    union all

    select run_id, problem_id, 'answer' as unit, unit_id, candidate_id
    from grouped_answer_members

    union all

    select run_id, problem_id, 'answer' as unit, unit_id, candidate_id
    from single_answer_members
)

select * from unit_membership
