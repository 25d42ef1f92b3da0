-- Reviewers' decisions, one row per (run, problem), with what is known of the chosen
-- candidate: its objective, the judge's mean score and whether it is correct (null when the
-- portfolio was rejected or the problem has no ground truth).

with

stored_decision_rows as (
    select * from stored_decisions
),

outcomes as (
    select * from candidate_outcomes
),

decisions_with_outcomes as (
    select
        -- ids
        stored_decision_rows.run_id,
        stored_decision_rows.problem_id,
        -- the decision
        stored_decision_rows.alpha,
        stored_decision_rows.evaluator,
        stored_decision_rows.decision,
        stored_decision_rows.candidate_id,
        stored_decision_rows.comment,
        stored_decision_rows.reviewer,
        stored_decision_rows.source,
        stored_decision_rows.decided_at,
        -- the chosen candidate's outcome
        outcomes.execution_status,
        outcomes.objective,
        outcomes.objective_truth,
        outcomes.judge_score,
        outcomes.correct,
        outcomes.correct_orlm
    from stored_decision_rows
    left join outcomes
        on stored_decision_rows.run_id = outcomes.run_id
        and stored_decision_rows.problem_id = outcomes.problem_id
        and stored_decision_rows.candidate_id = outcomes.candidate_id
)

select * from decisions_with_outcomes
