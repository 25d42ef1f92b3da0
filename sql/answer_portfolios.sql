-- Answer-level portfolio members, one row per (run, problem, evaluator, α, answer): the
-- k*(α) best-ranked answers (Eq. 2 over answers). candidate_id is the answer's
-- representative (its best-ranked member under the same evaluator); rank and p are the
-- answer's. The columns of `portfolios`, plus answer_id.

with

ranked_answers as (
    select * from unit_rankings
    where unit = 'answer'
),

answer_sizes as (
    select * from unit_portfolio_sizes
    where unit = 'answer'
),

answer_portfolio_members as (
    select
        answer_sizes.run_id,
        answer_sizes.problem_id,
        answer_sizes.evaluator,
        answer_sizes.alpha,
        ranked_answers.candidate_id,
        ranked_answers.rank,
        ranked_answers.p,
        answer_sizes.portfolio_size,
        answer_sizes.target_reached,
        ranked_answers.unit_id as answer_id
    from answer_sizes
    inner join ranked_answers
        on answer_sizes.run_id = ranked_answers.run_id
        and answer_sizes.problem_id = ranked_answers.problem_id
        and answer_sizes.evaluator = ranked_answers.evaluator
        and ranked_answers.rank <= answer_sizes.portfolio_size
)

select * from answer_portfolio_members
