-- Every unit's rank under each evaluator kind, best first, for both units of unit_members:
-- candidates, and answers (a unit's p is its members' summed p; its score samples are its
-- members' samples; it is valid when its members are). candidate_id is the unit's
-- representative: its best-ranked member in the same evaluator's candidate ranking.
-- The kinds are the rows of `evaluators` (registered from optfolio.evaluators); each ranks
-- by one ranking source:
--   mean_score : mean of the LLM evaluator's sampled scores (null scores ignored)
--   p          : the generator probability p itself ("generator as evaluator")
-- A kind ranked by any other source is an error, not a ranking of ties.
-- Valid candidates before ⊥; missing scores after present ones; ties broken by
-- md5_number(tie_seed || ':' || unit_id): the md5 digest read as a little-endian
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

members as (
    select * from unit_members
),

units as (
    select
        members.run_id,
        members.problem_id,
        members.unit,
        members.unit_id,
        -- summed in candidate order, as the Python reference does: float sums depend on order
        list_sum(list(candidate_probabilities.p order by members.candidate_id)) as p,
        bool_and(candidate_probabilities.valid) as valid
    from members
    inner join candidate_probabilities
        on members.run_id = candidate_probabilities.run_id
        and members.problem_id = candidate_probabilities.problem_id
        and members.candidate_id = candidate_probabilities.candidate_id
    group by members.run_id, members.problem_id, members.unit, members.unit_id
),

mean_llm_scores as (
    -- the mean of all the unit's samples, not of its members' means
    select
        members.run_id,
        members.problem_id,
        members.unit,
        members.unit_id,
        -- ordered: the mean, and so the ranking, is the same bits whatever the thread count
        avg(
            score_samples.score
            order by score_samples.candidate_id, score_samples.sample_index
        ) as mean_score
    from members
    inner join score_samples
        on members.run_id = score_samples.run_id
        and members.problem_id = score_samples.problem_id
        and members.candidate_id = score_samples.candidate_id
    group by members.run_id, members.problem_id, members.unit, members.unit_id
),

units_with_tie_keys as (
    select
        units.*,
        md5_number(settings.tie_seed::varchar || ':' || units.unit_id) as tie_key
    from units
    cross join settings
),

unit_ranking_sources as (
    select
        units_with_tie_keys.*,
        mean_llm_scores.mean_score
    from units_with_tie_keys
    left join mean_llm_scores
        on units_with_tie_keys.run_id = mean_llm_scores.run_id
        and units_with_tie_keys.problem_id = mean_llm_scores.problem_id
        and units_with_tie_keys.unit = mean_llm_scores.unit
        and units_with_tie_keys.unit_id = mean_llm_scores.unit_id
),

ranking_inputs as (
    select
        unit_ranking_sources.run_id,
        unit_ranking_sources.problem_id,
        unit_ranking_sources.unit,
        unit_ranking_sources.unit_id,
        unit_ranking_sources.p,
        unit_ranking_sources.valid,
        unit_ranking_sources.tie_key,
        evaluator_kinds.evaluator,
        case evaluator_kinds.ranked_by
            when 'mean_score' then unit_ranking_sources.mean_score
            when 'p' then unit_ranking_sources.p
            else error(
                'evaluator ' || evaluator_kinds.evaluator
                || ': no ranking source ' || evaluator_kinds.ranked_by
            )
        end as ranking_score
    from unit_ranking_sources
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
        partition by run_id, problem_id, unit, evaluator
        order by (not valid), ranking_score desc nulls last, tie_key
    )
),

representatives as (
    -- each unit's best-ranked member in the same evaluator's candidate ranking
    select
        members.run_id,
        members.problem_id,
        members.unit,
        members.unit_id,
        candidate_ranks.evaluator,
        arg_min(members.candidate_id, candidate_ranks.rank) as candidate_id
    from members
    inner join ranked_with_cumulative_mass as candidate_ranks
        on members.run_id = candidate_ranks.run_id
        and members.problem_id = candidate_ranks.problem_id
        and members.candidate_id = candidate_ranks.unit_id
        and candidate_ranks.unit = 'candidate'
    group by
        members.run_id, members.problem_id, members.unit, members.unit_id, candidate_ranks.evaluator
)

select
    ranked.run_id,
    ranked.problem_id,
    ranked.unit,
    ranked.evaluator,
    ranked.unit_id,
    representatives.candidate_id,
    ranked.rank,
    ranked.p,
    ranked.valid,
    ranked.ranking_score,
    ranked.cum_p
from ranked_with_cumulative_mass as ranked
inner join representatives
    on ranked.run_id = representatives.run_id
    and ranked.problem_id = representatives.problem_id
    and ranked.unit = representatives.unit
    and ranked.unit_id = representatives.unit_id
    and ranked.evaluator = representatives.evaluator
