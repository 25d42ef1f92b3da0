-- The usual multi-sample baselines per problem, over the generator's samples (a merged
-- candidate counts n_samples times; ⊥ samples count and are never correct):
--   samples, correct_samples  → pass@1 = correct / samples, and pass@s (unbiased estimator,
--                               computed in quality.sql for each size)
--   majority_vote_correct     : the objective most samples agree on (rounded to 6 decimals;
--                               ties broken by a seeded hash) is correct.

with

outcomes as (
    select * from candidate_outcomes
),

settings as (
    select tie_seed, correct_rel_tol from run_settings
),

sample_counts as (
    select
        run_id,
        problem_id,
        any_value(objective_truth) as objective_truth,
        sum(n_samples) as samples,
        sum(case when correct then n_samples else 0 end) as correct_samples,
        sum(case when correct_orlm then n_samples else 0 end) as correct_samples_orlm
    from outcomes
    group by run_id, problem_id
),

objective_votes as (
    select
        run_id,
        problem_id,
        round(objective, 6) as voted_objective,
        sum(n_samples) as votes
    from outcomes
    where valid and objective is not null and isfinite(objective)
    group by run_id, problem_id, round(objective, 6)
),

ranked_objectives as (
    select
        objective_votes.*,
        row_number() over (
            partition by run_id, problem_id
            order by
                votes desc,
                md5_number(settings.tie_seed::varchar || ':' || voted_objective::varchar)
        ) as vote_rank
    from objective_votes
    cross join settings
),

majority_objectives as (
    select
        run_id,
        problem_id,
        voted_objective as majority_objective
    from ranked_objectives
    where vote_rank = 1
),

baselines as (
    select
        sample_counts.run_id,
        sample_counts.problem_id,
        sample_counts.objective_truth is not null as has_ground_truth,
        sample_counts.samples,
        sample_counts.correct_samples,
        sample_counts.correct_samples_orlm,
        case
            when sample_counts.objective_truth is null then null
            else sample_counts.correct_samples / sample_counts.samples
        end as pass_at_1,
        majority_objectives.majority_objective,
        case
            when sample_counts.objective_truth is null then null
            when majority_objectives.majority_objective is null then false
            else abs(majority_objectives.majority_objective - sample_counts.objective_truth)
                <= settings.correct_rel_tol * greatest(abs(sample_counts.objective_truth), 1.0)
        end as majority_vote_correct
    from sample_counts
    left join majority_objectives
        on sample_counts.run_id = majority_objectives.run_id
        and sample_counts.problem_id = majority_objectives.problem_id
    cross join settings
)

select * from baselines
