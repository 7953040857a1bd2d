-- failed_cells.sql
-- Cells that failed, with their reasons, newest campaign first.
--
-- A cell "failed" when it did not produce a measurement (status = 'failed': the backend did
-- not start, the worker died, ...; the reason is in cells.error) or when it ran but its
-- summary was marked invalid (achieved rate below target, client lag, error rate above the
-- spec's limit; the reason is in cell_summaries.invalid / cells.invalid_reason). Skipped cells
-- (health gate) are listed too, with status 'skipped'. error_rate and the per-class error
-- counts (summary JSON "errors") help tell a broken server from an overloaded one.
-- Portable: PostgreSQL and SQLite >= 3.38.
SELECT
    c.id                               AS campaign_id,
    c.name                             AS campaign_name,
    c.created_at                       AS campaign_created_at,
    ce.cell_id,
    ce.backend_name,
    ce.load_label,
    ce.repetition,
    ce.attempt,
    ce.host,
    ce.status,
    CASE
        WHEN ce.status = 'failed'  THEN 'failed'
        WHEN ce.status = 'skipped' THEN 'skipped'
        ELSE 'invalid'
    END                                AS failure,
    COALESCE(ce.error, ce.invalid_reason, s.invalid) AS reason,
    s.error_rate,
    s.summary -> 'errors'              AS errors_by_class,
    ce.finished_at
FROM cells ce
JOIN campaigns c            ON c.id = ce.campaign_id
LEFT JOIN cell_summaries s  ON s.campaign_id = ce.campaign_id AND s.cell_id = ce.cell_id
WHERE ce.status IN ('failed', 'skipped')
   OR ce.invalid_reason IS NOT NULL
   OR s.invalid IS NOT NULL
ORDER BY c.created_at DESC, ce.position;
