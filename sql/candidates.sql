-- Candidates with their generator probability p, normalized over each problem's candidate set
-- (invalid candidates ⊥ included, so their mass is counted and never collected).
-- p_method: length_normalized (exp of mean token log-prob, the paper's default), sequence
-- (exp of summed log-prob) or frequency (share of samples); a problem with any candidate
-- lacking log-probs falls back to frequency, recorded in p_method_used. A text sampled
-- n_samples times is that many samples of the generator: its weight is n_samples × exp(·).

with

stored_candidate_rows as (
    select * from stored_candidates
),

settings as (
    select p_method from run_settings
),

log_prob_stats_per_problem as (
    select
        run_id,
        problem_id,
        bool_and(logprob_mean is not null and isfinite(logprob_mean)) as has_mean_logprobs,
        bool_and(logprob_sum is not null and isfinite(logprob_sum)) as has_sum_logprobs,
        max(logprob_mean) as max_logprob_mean,
        max(logprob_sum) as max_logprob_sum
    from stored_candidate_rows
    group by run_id, problem_id
),

methods_used_per_problem as (
    select
        stats.*,
        case
            when settings.p_method = 'sequence' and stats.has_sum_logprobs then 'sequence'
            when settings.p_method = 'length_normalized' and stats.has_mean_logprobs
                then 'length_normalized'
            else 'frequency'
        end as p_method_used
    from log_prob_stats_per_problem as stats
    cross join settings
),

candidate_weights as (
    select
        stored_candidate_rows.*,
        methods.p_method_used,
        -- shift by the problem's max before exp: exp of a long text's log-prob underflows
        stored_candidate_rows.n_samples * case methods.p_method_used
            when 'sequence' then exp(stored_candidate_rows.logprob_sum - methods.max_logprob_sum)
            when 'length_normalized'
                then exp(stored_candidate_rows.logprob_mean - methods.max_logprob_mean)
            else 1.0
        end as weight
    from stored_candidate_rows
    inner join methods_used_per_problem as methods
        on stored_candidate_rows.run_id = methods.run_id
        and stored_candidate_rows.problem_id = methods.problem_id
),

weight_totals_per_problem as (
    select
        run_id,
        problem_id,
        sum(weight) as total_weight
    from candidate_weights
    group by run_id, problem_id
),

normalized_probabilities as (
    select
        candidate_weights.*,
        candidate_weights.weight / weight_totals_per_problem.total_weight as p
    from candidate_weights
    inner join weight_totals_per_problem
        on candidate_weights.run_id = weight_totals_per_problem.run_id
        and candidate_weights.problem_id = weight_totals_per_problem.problem_id
)

select * from normalized_probabilities
