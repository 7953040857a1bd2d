-- best_config_per_model.sql
-- The best backend configuration per model, by goodput under the campaign's SLO.
--
-- goodput (METRICS.md) is the rate of requests per second that met EVERY SLO of the campaign
-- spec, so ranking by it ranks "throughput you can actually promise". For each model
-- (campaign spec model.name), each backend configuration (backend content_hash: kind, image,
-- engine args) and load point, it averages goodput over the valid, completed repetitions, then
-- keeps the best row per model. Ties go to the lower p99 TTFT.
--
-- Only completed/partial campaigns, completed cells, and cells not marked invalid count.
-- Portable: PostgreSQL and SQLite >= 3.38 (JSON `->`/`->>` operators, window functions).
-- Output: model, backend, kind, image, engine_args, load_label, repetitions, goodput_mean,
--         slo_attainment_mean, ttft_ms_p99_mean, output_throughput_mean, campaign_id, campaign_name.
WITH per_config AS (
    SELECT
        c.spec -> 'model' ->> 'name'           AS model,
        b.content_hash                          AS config_hash,
        b.name                                  AS backend,
        b.kind                                  AS kind,
        b.image                                 AS image,
        b.engine_args                           AS engine_args,
        ce.load_label                           AS load_label,
        c.id                                    AS campaign_id,
        c.name                                  AS campaign_name,
        COUNT(*)                                AS repetitions,
        AVG(s.goodput)                          AS goodput_mean,
        AVG(s.slo_attainment)                   AS slo_attainment_mean,
        AVG(s.ttft_ms_p99)                      AS ttft_ms_p99_mean,
        AVG(s.output_throughput)                AS output_throughput_mean
    FROM cell_summaries s
    JOIN cells ce     ON ce.campaign_id = s.campaign_id AND ce.cell_id = s.cell_id
    JOIN campaigns c  ON c.id = s.campaign_id
    JOIN backends b   ON b.campaign_id = ce.campaign_id AND b.name = ce.backend_name
    WHERE c.status IN ('completed', 'partial')
      AND ce.status = 'completed'
      AND s.invalid IS NULL
      AND s.goodput IS NOT NULL
    GROUP BY c.spec -> 'model' ->> 'name', b.content_hash, b.name, b.kind, b.image, b.engine_args,
             ce.load_label, c.id, c.name
),
ranked AS (
    SELECT per_config.*,
           ROW_NUMBER() OVER (
               PARTITION BY model
               ORDER BY goodput_mean DESC, ttft_ms_p99_mean ASC, campaign_id, backend, load_label
           ) AS rank_in_model
    FROM per_config
)
SELECT model, backend, kind, image, engine_args, load_label, repetitions,
       goodput_mean, slo_attainment_mean, ttft_ms_p99_mean, output_throughput_mean,
       campaign_id, campaign_name
FROM ranked
WHERE rank_in_model = 1
ORDER BY model;
