-- Every candidate's rank under each evaluator kind, best first. The kinds are the rows of
-- `evaluators` (registered from optfolio.evaluators); each ranks by one ranking source:
--   mean_score : mean of the LLM evaluator's sampled scores (null scores ignored)
--   p          : the generator probability p itself ("generator as evaluator")
-- A kind ranked by any other source is an error, not a ranking of ties.
-- Valid candidates before ⊥; missing scores after present ones; ties broken by
-- md5_number(tie_seed || ':' || candidate_id): the md5 digest read as a little-endian
-- 128-bit integer, the same key the Python reference uses.

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

evaluator_kinds as (
    select evaluator, ranked_by from evaluators
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

candidates_with_tie_keys as (
    select
        candidate_probabilities.run_id,
        candidate_probabilities.problem_id,
        candidate_probabilities.candidate_id,
        candidate_probabilities.p,
        candidate_probabilities.valid,
        md5_number(settings.tie_seed::varchar || ':' || candidate_probabilities.candidate_id)
            as tie_key
    from candidate_probabilities
    cross join settings
),

candidate_ranking_sources as (
    select
        candidates_with_tie_keys.*,
        mean_llm_scores.mean_score
    from candidates_with_tie_keys
    left join mean_llm_scores
        on candidates_with_tie_keys.run_id = mean_llm_scores.run_id
        and candidates_with_tie_keys.problem_id = mean_llm_scores.problem_id
        and candidates_with_tie_keys.candidate_id = mean_llm_scores.candidate_id
),

ranking_inputs as (
    select
        candidate_ranking_sources.run_id,
        candidate_ranking_sources.problem_id,
        candidate_ranking_sources.candidate_id,
        candidate_ranking_sources.p,
        candidate_ranking_sources.valid,
        candidate_ranking_sources.tie_key,
        evaluator_kinds.evaluator,
        case evaluator_kinds.ranked_by
            when 'mean_score' then candidate_ranking_sources.mean_score
            when 'p' then candidate_ranking_sources.p
            else error(
                'evaluator ' || evaluator_kinds.evaluator
                || ': no ranking source ' || evaluator_kinds.ranked_by
            )
        end as ranking_score
    from candidate_ranking_sources
    cross join evaluator_kinds
),

ranked_with_cumulative_mass as (
    -- one window for every kind, so DuckDB sorts each ranking once
    select
        *,
        row_number() over best_first as rank,
        sum(p) over (best_first rows between unbounded preceding and current row) as cum_p
    from ranking_inputs
    window best_first as (
        partition by run_id, problem_id, evaluator
        order by (not valid), ranking_score desc nulls last, tie_key
    )
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
from ranked_with_cumulative_mass
