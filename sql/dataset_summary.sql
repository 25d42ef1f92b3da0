-- One line per (run, unit, evaluator, basis, α or size) across the whole dataset: how
-- portfolios compare with random picks of the same size (distinct valid units, and raw
-- generator samples) and with the one-sample, pass@s and majority-vote baselines. Shares are
-- over problems with a ground truth. calibrated marks the run's calibrated α̂; the
-- share_unparsed_* columns are the run's evaluator and judge samples whose reply held no
-- score even after being asked again.

with

quality_rows as (
    select * from quality
),

score_samples as (
    select * from scores
),

judgment_samples as (
    select * from judgments
),

unparsed_scores_per_run as (
    select
        run_id,
        avg(case when score is null then 1.0 else 0.0 end) as share_unparsed_scores
    from score_samples
    group by run_id
),

unparsed_judgments_per_run as (
    select
        run_id,
        avg(case when score is null then 1.0 else 0.0 end) as share_unparsed_judgments
    from judgment_samples
    group by run_id
),

summary as (
    select
        run_id,
        unit,
        evaluator,
        basis,
        alpha,
        case when basis = 'size' then size end as size,
        bool_or(calibrated) as calibrated,
        count(*) as problems,
        avg(size) as mean_portfolio_size,
        -- Float means ordered by problem: the same run gives the same bits on any thread count.
        avg(portfolio_min_judge order by problem_id) as mean_portfolio_min_judge,
        avg(random_min_judge order by problem_id) as mean_random_min_judge,
        avg(sample_min_judge order by problem_id) as mean_sample_min_judge,
        avg(case when portfolio_holds_correct then 1.0 when not portfolio_holds_correct then 0.0 end)
            as share_portfolio_holds_correct,
        avg(random_holds_correct order by problem_id) as share_random_holds_correct,
        avg(sample_holds_correct order by problem_id) as share_sample_holds_correct,
        avg(case
            when portfolio_holds_correct_orlm then 1.0 when not portfolio_holds_correct_orlm then 0.0
        end) as share_portfolio_holds_correct_orlm,
        avg(pass_at_1 order by problem_id) as mean_pass_at_1,
        avg(pass_at_size order by problem_id) as mean_pass_at_size,
        avg(case when majority_vote_correct then 1.0 when not majority_vote_correct then 0.0 end)
            as share_majority_vote_correct
    from quality_rows
    group by run_id, unit, evaluator, basis, alpha, case when basis = 'size' then size end
),

summary_with_parse_shares as (
    select
        summary.*,
        unparsed_scores_per_run.share_unparsed_scores,
        unparsed_judgments_per_run.share_unparsed_judgments
    from summary
    left join unparsed_scores_per_run
        on summary.run_id = unparsed_scores_per_run.run_id
    left join unparsed_judgments_per_run
        on summary.run_id = unparsed_judgments_per_run.run_id
)

select * from summary_with_parse_shares
order by run_id, unit, evaluator, basis, alpha, size
