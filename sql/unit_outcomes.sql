-- What is known of each unit's quality, one row per (run, problem, unit, unit_id): a
-- candidate's own outcome (candidate_outcomes), or an answer's:
--   judge_score : the mean of all its members' parsed judge samples (null: none parsed)
--   correct(_orlm): some member is correct (members agree within 1e-6, so all or none)
--   objective   : the least member objective

with

members as (
    select * from unit_members
),

candidate_results as (
    select * from candidate_outcomes
),

judgment_samples as (
    select * from judgments
),

unit_judge_scores as (
    select
        members.run_id,
        members.problem_id,
        members.unit,
        members.unit_id,
        avg(
            judgment_samples.normalized_score
            order by judgment_samples.candidate_id, judgment_samples.sample_index
        ) as judge_score
    from members
    inner join judgment_samples
        on members.run_id = judgment_samples.run_id
        and members.problem_id = judgment_samples.problem_id
        and members.candidate_id = judgment_samples.candidate_id
    group by members.run_id, members.problem_id, members.unit, members.unit_id
),

unit_results as (
    select
        members.run_id,
        members.problem_id,
        members.unit,
        members.unit_id,
        bool_and(candidate_results.valid) as valid,
        sum(candidate_results.n_samples) as n_samples,
        min(candidate_results.objective) filter (
            where candidate_results.execution_status = 'ok'
        ) as objective,
        any_value(candidate_results.objective_truth) as objective_truth,
        bool_or(candidate_results.correct) as correct,
        bool_or(candidate_results.correct_orlm) as correct_orlm
    from members
    inner join candidate_results
        on members.run_id = candidate_results.run_id
        and members.problem_id = candidate_results.problem_id
        and members.candidate_id = candidate_results.candidate_id
    group by members.run_id, members.problem_id, members.unit, members.unit_id
),

unit_outcomes as (
    select
        unit_results.*,
        unit_judge_scores.judge_score
    from unit_results
    left join unit_judge_scores
        on unit_results.run_id = unit_judge_scores.run_id
        and unit_results.problem_id = unit_judge_scores.problem_id
        and unit_results.unit = unit_judge_scores.unit
        and unit_results.unit_id = unit_judge_scores.unit_id
)

select * from unit_outcomes
