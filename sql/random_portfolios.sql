-- The baseline the paper's Fig. 5 draws: s distinct valid units (candidates, or answers)
-- picked at random, in random_draws seeded draws per problem. Draw d orders the valid units by
-- md5_number(tie_seed || ':' || d || ':' || unit_id); its first s form a uniformly random
-- s-subset, so one ordering per draw serves every size s. One row per (run, problem, unit,
-- draw, s). The minimum judge score is unknown when a drawn unit has none.

with

outcomes as (
    select * from unit_outcomes
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
        outcomes.unit,
        draw_numbers.draw,
        outcomes.judge_score,
        outcomes.correct,
        outcomes.correct_orlm,
        md5_number(
            settings.tie_seed::varchar || ':' || draw_numbers.draw::varchar || ':'
            || outcomes.unit_id
        ) as draw_key
    from outcomes
    cross join draw_numbers
    cross join settings
),

prefix_quality as (
    select
        run_id,
        problem_id,
        unit,
        draw,
        row_number() over first_s as size,
        case
            when count(judge_score) over first_s = count(*) over first_s
                then min(judge_score) over first_s
        end as min_judge_score,
        bool_or(correct) over first_s as holds_correct,
        bool_or(correct_orlm) over first_s as holds_correct_orlm
    from drawn_orders
    window first_s as (
        partition by run_id, problem_id, unit, draw
        order by draw_key
        rows between unbounded preceding and current row
    )
)

select * from prefix_quality
