-- One row per (run, problem, evaluator, α): portfolio size, whether 1 − α was reached, and
-- coverage c(P) (Def. 3.4) where a human ranking is known: the share of the portfolio that
-- lies in the human top-|P|. Rankings with no valid candidate appear with size 0.

with

sizes as (
    select * from portfolio_sizes
),

members as (
    select * from portfolios
),

candidate_human_ranks as (
    select run_id, problem_id, candidate_id, human_rank from candidates
),

member_coverage as (
    select
        members.run_id,
        members.problem_id,
        members.evaluator,
        members.alpha,
        -- coverage needs every member's human rank; null when any is unknown
        case
            when count(candidate_human_ranks.human_rank) = count(*)
                then avg(
                    case
                        when candidate_human_ranks.human_rank <= members.portfolio_size then 1.0
                        else 0.0
                    end
                )
        end as coverage
    from members
    left join candidate_human_ranks
        on members.run_id = candidate_human_ranks.run_id
        and members.problem_id = candidate_human_ranks.problem_id
        and members.candidate_id = candidate_human_ranks.candidate_id
    group by members.run_id, members.problem_id, members.evaluator, members.alpha
),

coverage_on_grid as (
    select
        sizes.run_id,
        sizes.problem_id,
        sizes.evaluator,
        sizes.alpha,
        sizes.portfolio_size,
        sizes.target_reached,
        member_coverage.coverage
    from sizes
    left join member_coverage
        on sizes.run_id = member_coverage.run_id
        and sizes.problem_id = member_coverage.problem_id
        and sizes.evaluator = member_coverage.evaluator
        and sizes.alpha = member_coverage.alpha
)

select * from coverage_on_grid
