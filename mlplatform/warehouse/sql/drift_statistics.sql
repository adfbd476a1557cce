-- Per-feature drift statistics of a day's binned values (`current`: feature, bin, category,
-- count, mean) against a reference profile (`reference`: the rows of
-- ml.training_reference_profile or ml.champion_score_profile), from the bins alone.
--   psi           sum((q - p) ln(q / p)) over the bins, missing included, shares floored at 1e-4
--   jensen_shannon  sqrt of the JS divergence (natural log) of the non-missing shares
--   wasserstein   W1 between the non-missing values, each bin's mass at its mean value (the
--                 reference bin means against the day's), divided by the reference std
--   chi2, dof     Pearson's chi-square of the day's counts against n x the reference shares
--                 (the reference, the whole train split, taken as known), bins expected below
--                 5 rows and values the reference never saw pooled into one
WITH ref AS (
    SELECT feature, kind, coalesce(bin::VARCHAR, category, '') AS key,
           coalesce(bin = -1, category IS NULL) AS missing, count, share, mean, std, n_distinct
    FROM reference
),
cur AS (
    SELECT feature, coalesce(bin::VARCHAR, category, '') AS key,
           coalesce(bin = -1, category IS NULL) AS missing, count, mean
    FROM current
),
info AS (
    SELECT feature, any_value(kind) AS kind, any_value(std) AS std,
           any_value(n_distinct) AS n_distinct
    FROM ref GROUP BY feature
),
bins AS (
    SELECT feature, key, coalesce(r.missing, c.missing) AS missing,
           coalesce(r.count, 0) AS ref_count,
           coalesce(r.share, 0) AS p, coalesce(c.count, 0) AS o, r.mean AS ref_mean,
           c.mean AS cur_mean
    FROM ref AS r FULL JOIN cur AS c USING (feature, key)
),
shares AS (
    SELECT *, o / sum(o) OVER (PARTITION BY feature) AS q,
           sum(o) OVER (PARTITION BY feature) AS n,
           -- shares among the non-missing values (the distances ignore missing values)
           CASE WHEN NOT missing THEN ref_count / sum(ref_count) FILTER (WHERE NOT missing)
                OVER (PARTITION BY feature) END AS p_present,
           CASE WHEN NOT missing THEN o / sum(o) FILTER (WHERE NOT missing)
                OVER (PARTITION BY feature) END AS q_present
    FROM bins
),
per_feature AS (
    SELECT feature, any_value(n) AS rows,
           sum((greatest(q, 1e-4) - greatest(p, 1e-4)) * ln(greatest(q, 1e-4) / greatest(p, 1e-4)))
               AS psi,
           sqrt(greatest(0.5 * sum(CASE WHEN p_present > 0
                                   THEN p_present * ln(2 * p_present / (p_present + q_present))
                                   ELSE 0 END)
                       + 0.5 * sum(CASE WHEN q_present > 0
                                   THEN q_present * ln(2 * q_present / (p_present + q_present))
                                   ELSE 0 END), 0)) AS jensen_shannon
    FROM shares GROUP BY feature
),
atoms AS (
    SELECT feature, ref_mean AS x, p_present AS w FROM shares WHERE p_present > 0
    UNION ALL
    SELECT feature, cur_mean, -q_present FROM shares WHERE q_present > 0
),
cdf AS (
    SELECT feature, x, sum(w) OVER running AS difference, lead(x) OVER ordered AS next_x
    FROM atoms
    WINDOW ordered AS (PARTITION BY feature ORDER BY x, w),
           running AS (ordered ROWS UNBOUNDED PRECEDING)
),
wasserstein AS (
    SELECT feature, sum(abs(difference) * (next_x - x)) AS w1
    FROM cdf WHERE next_x IS NOT NULL GROUP BY feature
),
buckets AS (
    SELECT feature, sum(o) AS observed,
           greatest(sum(p * n), any_value(n) * 1e-4) AS expected
    FROM (SELECT *, CASE WHEN p * n >= 5 THEN key END AS bucket FROM shares)  -- NULL: pooled
    GROUP BY feature, bucket
    HAVING sum(o) > 0 OR sum(p) > 0
),
chi_square AS (
    SELECT feature, sum((observed - expected) ** 2 / expected) AS chi2, count(*) - 1 AS dof
    FROM buckets GROUP BY feature
)
SELECT f.feature, i.kind, f.rows, f.psi, f.jensen_shannon,
       w.w1 / greatest(i.std, 0.001) AS wasserstein, i.n_distinct, c.chi2, c.dof
FROM per_feature AS f
JOIN info AS i USING (feature)
LEFT JOIN wasserstein AS w USING (feature)
LEFT JOIN chi_square AS c USING (feature)
ORDER BY f.feature
