-- One line per (run, evaluator, basis, α or size) across the whole dataset: how portfolios
-- compare with random picks of the same size and with the one-sample, pass@s and
-- majority-vote baselines. Shares are over problems with a ground truth.

with

quality_rows as (
    select * from quality
),

summary as (
    select
        run_id,
        evaluator,
        basis,
        alpha,
        case when basis = 'size' then size end as size,
        count(*) as problems,
        avg(size) as mean_portfolio_size,
        avg(portfolio_min_judge) as mean_portfolio_min_judge,
        avg(random_min_judge) as mean_random_min_judge,
        avg(case when portfolio_holds_correct then 1.0 when not portfolio_holds_correct then 0.0 end)
            as share_portfolio_holds_correct,
        avg(random_holds_correct) as share_random_holds_correct,
        avg(case
            when portfolio_holds_correct_orlm then 1.0 when not portfolio_holds_correct_orlm then 0.0
        end) as share_portfolio_holds_correct_orlm,
        avg(pass_at_1) as mean_pass_at_1,
        avg(pass_at_size) as mean_pass_at_size,
        avg(case when majority_vote_correct then 1.0 when not majority_vote_correct then 0.0 end)
            as share_majority_vote_correct
    from quality_rows
    group by run_id, evaluator, basis, alpha, case when basis = 'size' then size end
)

select * from summary
order by run_id, evaluator, basis, alpha, size
