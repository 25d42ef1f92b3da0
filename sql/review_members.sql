-- What a reviewer sees of each portfolio member, one row per (run, problem, evaluator, α,
-- member): the problem, the candidate's formulation and code, how its code ran, the
-- evaluator's sampled scores, the judge's mean score and, where the truth is known, whether
-- its objective is correct.

with

members as (
    select * from portfolios
),

problem_texts as (
    select run_id, problem_id, description from problems
),

candidate_texts as (
    select run_id, problem_id, candidate_id, n_samples, formulation, code, solver
    from candidates
),

execution_rows as (
    select * from executions
),

outcomes as (
    select * from candidate_outcomes
),

evaluator_samples as (
    select
        run_id,
        problem_id,
        candidate_id,
        avg(score) as evaluator_score,
        list(score order by sample_index) as evaluator_scores
    from scores
    group by run_id, problem_id, candidate_id
),

review_members as (
    select
        -- ids
        members.run_id,
        members.problem_id,
        members.evaluator,
        members.alpha,
        members.candidate_id,
        -- the portfolio
        members.rank,
        members.p,
        members.portfolio_size,
        members.target_reached,
        -- texts
        problem_texts.description,
        candidate_texts.n_samples,
        candidate_texts.formulation,
        candidate_texts.code,
        candidate_texts.solver,
        -- execution
        execution_rows.status as execution_status,
        execution_rows.solver_status,
        execution_rows.objective,
        execution_rows.runtime_s,
        execution_rows.stdout,
        execution_rows.stderr,
        -- scores and correctness
        evaluator_samples.evaluator_score,
        evaluator_samples.evaluator_scores,
        outcomes.judge_score,
        outcomes.judge_samples,
        outcomes.objective_truth,
        outcomes.correct,
        outcomes.correct_orlm
    from members
    inner join problem_texts
        on members.run_id = problem_texts.run_id
        and members.problem_id = problem_texts.problem_id
    inner join candidate_texts
        on members.run_id = candidate_texts.run_id
        and members.problem_id = candidate_texts.problem_id
        and members.candidate_id = candidate_texts.candidate_id
    left join execution_rows
        on members.run_id = execution_rows.run_id
        and members.problem_id = execution_rows.problem_id
        and members.candidate_id = execution_rows.candidate_id
    left join evaluator_samples
        on members.run_id = evaluator_samples.run_id
        and members.problem_id = evaluator_samples.problem_id
        and members.candidate_id = evaluator_samples.candidate_id
    left join outcomes
        on members.run_id = outcomes.run_id
        and members.problem_id = outcomes.problem_id
        and members.candidate_id = outcomes.candidate_id
)

select * from review_members
