-- metric_trend_nightly.sql
-- The trend of one metric across nightly campaigns over the last 90 days.
--
-- One row per nightly campaign x backend x load point: the mean over repetitions of the
-- metric (here p99 TTFT, column ttft_ms_p99) with its min, max and the number of valid
-- repetitions, oldest night first, so it plots directly (x = night, one line per
-- backend/load_label). To follow another metric, replace ttft_ms_p99 by any cell_summaries
-- column: tpot_ms_p99, itl_ms_p50, e2e_ms_p90, output_throughput, goodput, error_rate, ...
--
-- Nightly campaigns are those with kind = 'nightly' (set by the nightly sweep flow).
-- Cells marked invalid are left out; failed cells have no summary values to average.
-- PostgreSQL. For SQLite replace the date filter by
--     c.created_at >= datetime('now', '-90 days')   and date_trunc(...) by date(c.created_at).
SELECT
    date_trunc('day', c.created_at)  AS night,
    c.id                              AS campaign_id,
    c.name                            AS campaign_name,
    ce.backend_name,
    ce.load_label,
    COUNT(s.ttft_ms_p99)              AS repetitions,
    AVG(s.ttft_ms_p99)                AS ttft_ms_p99_mean,
    MIN(s.ttft_ms_p99)                AS ttft_ms_p99_min,
    MAX(s.ttft_ms_p99)                AS ttft_ms_p99_max
FROM campaigns c
JOIN cells ce           ON ce.campaign_id = c.id
JOIN cell_summaries s   ON s.campaign_id = ce.campaign_id AND s.cell_id = ce.cell_id
WHERE c.kind = 'nightly'
  AND c.status IN ('completed', 'partial')
  AND c.created_at >= now() - INTERVAL '90 days'
  AND ce.status = 'completed'
  AND s.invalid IS NULL
GROUP BY date_trunc('day', c.created_at), c.id, c.name, ce.backend_name, ce.load_label
ORDER BY night, ce.backend_name, ce.load_label;
