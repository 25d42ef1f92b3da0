-- A problem's distinct answers, one row per (run, problem, answer): candidates whose code ran
-- ok with objectives equal under the correctness tolerance (unit_members has the rule).
--   p                          : the members' summed generator probability
--   n_candidates, n_samples    : distinct texts behind it, and the generator samples they were
--   objective                  : the least member objective (members differ by ≤ 1e-6 relative)
--   representative_candidate_id: the best-ranked member under the default evaluator kind

with

members as (
    select * from unit_members
    where unit = 'answer'
),

candidate_probabilities as (
    select * from candidates
),

execution_rows as (
    select * from executions
),

ranked_answers as (
    select * from unit_rankings
    where unit = 'answer'
),

default_evaluator as (
    select evaluator from evaluators
    where is_default
),

answer_members as (
    select
        members.run_id,
        members.problem_id,
        members.unit_id as answer_id,
        members.candidate_id,
        candidate_probabilities.n_samples,
        candidate_probabilities.valid,
        case when execution_rows.status = 'ok' then execution_rows.objective end as objective
    from members
    inner join candidate_probabilities
        on members.run_id = candidate_probabilities.run_id
        and members.problem_id = candidate_probabilities.problem_id
        and members.candidate_id = candidate_probabilities.candidate_id
    left join execution_rows
        on members.run_id = execution_rows.run_id
        and members.problem_id = execution_rows.problem_id
        and members.candidate_id = execution_rows.candidate_id
),

answer_totals as (
    select
        run_id,
        problem_id,
        answer_id,
        count(*) as n_candidates,
        sum(n_samples) as n_samples,
        min(objective) as objective,
        bool_and(valid) as valid,
        list(candidate_id order by candidate_id) as candidate_ids
    from answer_members
    group by run_id, problem_id, answer_id
),

answers as (
    select
        answer_totals.run_id,
        answer_totals.problem_id,
        answer_totals.answer_id,
        ranked_answers.p,
        answer_totals.n_candidates,
        answer_totals.n_samples,
        answer_totals.objective,
        ranked_answers.candidate_id as representative_candidate_id,
        answer_totals.valid,
        answer_totals.candidate_ids
    from answer_totals
    inner join ranked_answers
        on answer_totals.run_id = ranked_answers.run_id
        and answer_totals.problem_id = ranked_answers.problem_id
        and answer_totals.answer_id = ranked_answers.unit_id
    inner join default_evaluator
        on ranked_answers.evaluator = default_evaluator.evaluator
)

select * from answers
