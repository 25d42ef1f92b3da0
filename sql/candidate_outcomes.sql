-- Every candidate with what is known of its quality: the executed objective, correctness
-- against the ground truth under two rules, and the judge's mean normalized score.
--   correct      : |objective − truth| ≤ rel_tol · max(|truth|, 1)   (rel_tol = 1e-6; the
--                  max(·, 1) is the absolute floor that keeps a zero optimum checkable)
--   correct_orlm : ORLM's rule: both rounded to integers, relative error ≤ 5%
--                  (exact equality when the rounded truth is 0)
-- Null when the problem has no numeric ground truth. ⊥ and failed runs are never correct.

with

candidate_probabilities as (
    select * from candidates
),

execution_rows as (
    select * from executions
),

judgment_samples as (
    select * from judgments
),

ground_truths as (
    select run_id, problem_id, objective_truth from problems
),

settings as (
    select correct_rel_tol, orlm_rel_tol from run_settings
),

mean_judge_scores as (
    select
        run_id,
        problem_id,
        candidate_id,
        avg(normalized_score) as judge_score,
        count(normalized_score) as judge_samples
    from judgment_samples
    group by run_id, problem_id, candidate_id
),

joined as (
    select
        candidate_probabilities.run_id,
        candidate_probabilities.problem_id,
        candidate_probabilities.candidate_id,
        candidate_probabilities.valid,
        candidate_probabilities.n_samples,
        candidate_probabilities.p,
        execution_rows.status as execution_status,
        execution_rows.objective,
        ground_truths.objective_truth,
        mean_judge_scores.judge_score,
        coalesce(mean_judge_scores.judge_samples, 0) as judge_samples
    from candidate_probabilities
    left join execution_rows
        on candidate_probabilities.run_id = execution_rows.run_id
        and candidate_probabilities.problem_id = execution_rows.problem_id
        and candidate_probabilities.candidate_id = execution_rows.candidate_id
    left join ground_truths
        on candidate_probabilities.run_id = ground_truths.run_id
        and candidate_probabilities.problem_id = ground_truths.problem_id
    left join mean_judge_scores
        on candidate_probabilities.run_id = mean_judge_scores.run_id
        and candidate_probabilities.problem_id = mean_judge_scores.problem_id
        and candidate_probabilities.candidate_id = mean_judge_scores.candidate_id
),

with_correctness as (
    select
        joined.*,
        case
            when objective_truth is null then null
            when not valid or objective is null or not isfinite(objective) then false
            else abs(objective - objective_truth)
                <= settings.correct_rel_tol * greatest(abs(objective_truth), 1.0)
        end as correct,
        case
            when objective_truth is null then null
            when not valid or objective is null or not isfinite(objective) then false
            when round(objective_truth) = 0 then round(objective) = 0
            else abs(round(objective) - round(objective_truth))
                <= settings.orlm_rel_tol * abs(round(objective_truth))
        end as correct_orlm
    from joined
    cross join settings
)

select * from with_correctness
