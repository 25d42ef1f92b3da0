-- The baseline the paper compares against (Fig. 5): s valid candidates drawn at random, in
-- random_draws seeded draws per problem. Draw d orders the valid candidates by
-- md5_number(tie_seed || ':' || d || ':' || candidate_id); its first s form a uniformly random
-- s-subset, so one ordering per draw serves every size s. One row per (run, problem, draw, s).

with

outcomes as (
    select * from candidate_outcomes
    where valid
),

settings as (
    select tie_seed, random_draws from run_settings
),

draw_numbers as (
    select range as draw
    from range(0, (select random_draws from settings))
),

drawn_orders as (
    select
        outcomes.run_id,
        outcomes.problem_id,
        draw_numbers.draw,
        outcomes.judge_score,
        outcomes.correct,
        outcomes.correct_orlm,
        md5_number(
            settings.tie_seed::varchar || ':' || draw_numbers.draw::varchar || ':'
            || outcomes.candidate_id
        ) as draw_key
    from outcomes
    cross join draw_numbers
    cross join settings
),

prefix_quality as (
    select
        run_id,
        problem_id,
        draw,
        row_number() over first_s as size,
        min(judge_score) over first_s as min_judge_score,
        bool_or(correct) over first_s as holds_correct,
        bool_or(correct_orlm) over first_s as holds_correct_orlm
    from drawn_orders
    window first_s as (
        partition by run_id, problem_id, draw
        order by draw_key
        rows between unbounded preceding and current row
    )
)

select * from prefix_quality
