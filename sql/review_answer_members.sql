-- What a reviewer sees of an answer-level portfolio, one row per (run, problem, evaluator, α,
-- answer, member candidate): the answer (its rank and p in the portfolio, the candidates,
-- generator samples and evaluator samples behind it and their mean score, its objective,
-- pooled judge score and correctness) and each of its member candidates as review_members
-- shows a candidate. is_representative marks the answer's representative
-- (answer_portfolios.candidate_id): the candidate whose formulation and code stand for the
-- answer, and the one a decision on the answer records.

with

portfolio_answers as (
    select * from answer_portfolios
),

answer_totals as (
    select run_id, problem_id, answer_id, n_candidates, n_samples, objective
    from answers
),

members as (
    select run_id, problem_id, unit_id as answer_id, candidate_id
    from unit_members
    where unit = 'answer'
),

answer_results as (
    select
        run_id,
        problem_id,
        unit_id as answer_id,
        judge_score,
        correct,
        correct_orlm
    from unit_outcomes
    where unit = 'answer'
),

candidate_ranks as (
    select run_id, problem_id, evaluator, candidate_id, rank, p from rankings
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
        list(score order by sample_index) as evaluator_scores,
        count(score) as evaluator_sample_count,
        sum(score) as evaluator_score_sum
    from scores
    group by run_id, problem_id, candidate_id
),

review_answer_members as (
    select
        -- ids
        portfolio_answers.run_id,
        portfolio_answers.problem_id,
        portfolio_answers.evaluator,
        portfolio_answers.alpha,
        portfolio_answers.answer_id,
        members.candidate_id,
        -- the answer in the portfolio
        portfolio_answers.rank as answer_rank,
        portfolio_answers.p as answer_p,
        portfolio_answers.portfolio_size,
        portfolio_answers.target_reached,
        portfolio_answers.candidate_id as representative_candidate_id,
        members.candidate_id = portfolio_answers.candidate_id as is_representative,
        answer_totals.n_candidates as answer_n_candidates,
        answer_totals.n_samples as answer_n_samples,
        coalesce(sum(evaluator_samples.evaluator_sample_count) over answer_window, 0)
            as answer_evaluator_samples,
        -- the mean of all the answer's samples, as unit_rankings ranks answers by
        sum(evaluator_samples.evaluator_score_sum) over answer_window
            / nullif(sum(evaluator_samples.evaluator_sample_count) over answer_window, 0)
            as answer_evaluator_score,
        answer_totals.objective as answer_objective,
        answer_results.judge_score as answer_judge_score,
        answer_results.correct as answer_correct,
        answer_results.correct_orlm as answer_correct_orlm,
        -- the member candidate: its rank and p among candidates under the same evaluator
        candidate_ranks.rank,
        candidate_ranks.p,
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
    from portfolio_answers
    inner join members
        on portfolio_answers.run_id = members.run_id
        and portfolio_answers.problem_id = members.problem_id
        and portfolio_answers.answer_id = members.answer_id
    inner join answer_totals
        on portfolio_answers.run_id = answer_totals.run_id
        and portfolio_answers.problem_id = answer_totals.problem_id
        and portfolio_answers.answer_id = answer_totals.answer_id
    left join answer_results
        on portfolio_answers.run_id = answer_results.run_id
        and portfolio_answers.problem_id = answer_results.problem_id
        and portfolio_answers.answer_id = answer_results.answer_id
    inner join candidate_ranks
        on portfolio_answers.run_id = candidate_ranks.run_id
        and portfolio_answers.problem_id = candidate_ranks.problem_id
        and portfolio_answers.evaluator = candidate_ranks.evaluator
        and members.candidate_id = candidate_ranks.candidate_id
    inner join problem_texts
        on portfolio_answers.run_id = problem_texts.run_id
        and portfolio_answers.problem_id = problem_texts.problem_id
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
    window answer_window as (
        partition by
            portfolio_answers.run_id,
            portfolio_answers.problem_id,
            portfolio_answers.evaluator,
            portfolio_answers.alpha,
            portfolio_answers.answer_id
    )
)

select * from review_answer_members
