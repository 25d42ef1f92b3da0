-- Every candidate's rank under each evaluator type, best first:
--   llm       : mean of the LLM evaluator's sampled scores (null scores ignored)
--   generator : the generator probability p itself ("generator as evaluator")
-- Valid candidates before ⊥; missing scores after present ones; ties broken by
-- md5(tie_seed || ':' || candidate_id), the same key the Python reference uses.

with

candidate_probabilities as (
    select * from candidates
),

score_samples as (
    select * from scores
),

settings as (
    select tie_seed from run_settings
),

mean_llm_scores as (
    select
        run_id,
        problem_id,
        candidate_id,
        avg(score) as mean_score
    from score_samples
    group by run_id, problem_id, candidate_id
),

ranking_inputs as (
    select
        candidate_probabilities.run_id,
        candidate_probabilities.problem_id,
        'llm' as evaluator,
        candidate_probabilities.candidate_id,
        candidate_probabilities.p,
        candidate_probabilities.valid,
        mean_llm_scores.mean_score as ranking_score
    from candidate_probabilities
    left join mean_llm_scores
        on candidate_probabilities.run_id = mean_llm_scores.run_id
        and candidate_probabilities.problem_id = mean_llm_scores.problem_id
        and candidate_probabilities.candidate_id = mean_llm_scores.candidate_id

    union all

    select
        run_id,
        problem_id,
        'generator' as evaluator,
        candidate_id,
        p,
        valid,
        p as ranking_score
    from candidate_probabilities
),

ranked as (
    select
        ranking_inputs.*,
        row_number() over (
            partition by run_id, problem_id, evaluator
            order by
                (not valid),
                ranking_score desc nulls last,
                md5(settings.tie_seed::varchar || ':' || candidate_id)
        ) as rank
    from ranking_inputs
    cross join settings
),

with_cumulative_mass as (
    select
        *,
        sum(p) over (
            partition by run_id, problem_id, evaluator
            order by rank
            rows between unbounded preceding and current row
        ) as cum_p
    from ranked
)

select
    run_id,
    problem_id,
    evaluator,
    candidate_id,
    rank,
    p,
    valid,
    ranking_score,
    cum_p
from with_cumulative_mass
