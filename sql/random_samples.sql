-- The paper's own baseline (Fig. 5, "prompting multiple times"): s of the generator's N raw
-- samples drawn at random, multiplicity counted (a text sampled n times is n samples), in
-- random_draws seeded draws per problem. Draw d orders the samples by
-- md5_number(tie_seed || ':' || d || ':' || candidate_id || '#' || copy); its first s are a
-- uniformly random s-subset of the samples. A ⊥ sample has judge score 0 and is never correct;
-- a valid sample without a parsed judge score makes the minimum unknown.
-- One row per (run, problem, draw, s).

with

outcomes as (
    select * from candidate_outcomes
),

settings as (
    select tie_seed, random_draws from run_settings
),

draw_numbers as (
    select range as draw
    from range(0, (select random_draws from settings))
),

raw_samples as (
    select
        run_id,
        problem_id,
        candidate_id,
        unnest(range(n_samples)) as copy,
        case when valid then judge_score else 0.0 end as judge_score,
        correct,  -- ⊥ is never correct already (candidate_outcomes)
        correct_orlm
    from outcomes
),

drawn_orders as (
    select
        raw_samples.run_id,
        raw_samples.problem_id,
        draw_numbers.draw,
        raw_samples.judge_score,
        raw_samples.correct,
        raw_samples.correct_orlm,
        md5_number(
            settings.tie_seed::varchar || ':' || draw_numbers.draw::varchar || ':'
            || raw_samples.candidate_id || '#' || raw_samples.copy::varchar
        ) as draw_key
    from raw_samples
    cross join draw_numbers
    cross join settings
),

prefix_quality as (
    select
        run_id,
        problem_id,
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
        partition by run_id, problem_id, draw
        order by draw_key
        rows between unbounded preceding and current row
    )
)

select * from prefix_quality
