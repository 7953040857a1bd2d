-- benchflow results schema (postgresql), generated from the Alembic migrations in sql/migrations
-- by `benchflow db sql --dialect postgresql`. Do not edit: add a migration, then regenerate.
-- Apply migrations with `benchflow db upgrade`, not with this file.

BEGIN;

CREATE TABLE alembic_version (
    version_num VARCHAR(32) NOT NULL,
    CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num)
);

-- Running upgrade  -> 0001

CREATE TABLE campaigns (
    id VARCHAR(128) NOT NULL,
    name VARCHAR(200) NOT NULL,
    description TEXT,
    spec JSONB NOT NULL,
    spec_hash VARCHAR(128) NOT NULL,
    status VARCHAR(16) NOT NULL,
    kind VARCHAR(32) NOT NULL,
    labels JSONB NOT NULL,
    flow_run_id VARCHAR(64),
    is_baseline BOOLEAN NOT NULL,
    created_at TIMESTAMP WITH TIME ZONE NOT NULL,
    updated_at TIMESTAMP WITH TIME ZONE NOT NULL,
    finished_at TIMESTAMP WITH TIME ZONE,
    schema_version INTEGER NOT NULL,
    PRIMARY KEY (id)
);

CREATE INDEX ix_campaigns_kind ON campaigns (kind);

CREATE INDEX ix_campaigns_name ON campaigns (name);

CREATE INDEX ix_campaigns_status ON campaigns (status);

CREATE TABLE backends (
    campaign_id VARCHAR(128) NOT NULL,
    name VARCHAR(128) NOT NULL,
    kind VARCHAR(16) NOT NULL,
    launcher VARCHAR(16) NOT NULL,
    image TEXT,
    image_digest VARCHAR(128),
    engine_args JSONB NOT NULL,
    command JSONB,
    content_hash VARCHAR(128) NOT NULL,
    PRIMARY KEY (campaign_id, name),
    FOREIGN KEY(campaign_id) REFERENCES campaigns (id) ON DELETE CASCADE
);

CREATE TABLE cells (
    campaign_id VARCHAR(128) NOT NULL,
    cell_id VARCHAR(128) NOT NULL,
    backend_name VARCHAR(128) NOT NULL,
    load_label VARCHAR(64) NOT NULL,
    load_point JSONB NOT NULL,
    repetition INTEGER NOT NULL,
    position INTEGER NOT NULL,
    status VARCHAR(16) NOT NULL,
    started_at TIMESTAMP WITH TIME ZONE,
    finished_at TIMESTAMP WITH TIME ZONE,
    window_s FLOAT,
    host VARCHAR(255),
    gpu_uuids JSONB NOT NULL,
    error TEXT,
    invalid_reason TEXT,
    artifact_uris JSONB NOT NULL,
    attempt INTEGER NOT NULL,
    PRIMARY KEY (campaign_id, cell_id),
    FOREIGN KEY(campaign_id) REFERENCES campaigns (id) ON DELETE CASCADE
);

CREATE INDEX ix_cells_campaign_status ON cells (campaign_id, status);

CREATE TABLE cell_summaries (
    campaign_id VARCHAR(128) NOT NULL,
    cell_id VARCHAR(128) NOT NULL,
    ttft_ms_mean FLOAT,
    ttft_ms_p50 FLOAT,
    ttft_ms_p90 FLOAT,
    ttft_ms_p95 FLOAT,
    ttft_ms_p99 FLOAT,
    tpot_ms_mean FLOAT,
    tpot_ms_p50 FLOAT,
    tpot_ms_p90 FLOAT,
    tpot_ms_p95 FLOAT,
    tpot_ms_p99 FLOAT,
    itl_ms_mean FLOAT,
    itl_ms_p50 FLOAT,
    itl_ms_p90 FLOAT,
    itl_ms_p95 FLOAT,
    itl_ms_p99 FLOAT,
    e2e_ms_mean FLOAT,
    e2e_ms_p50 FLOAT,
    e2e_ms_p90 FLOAT,
    e2e_ms_p95 FLOAT,
    e2e_ms_p99 FLOAT,
    ntpot_ms_mean FLOAT,
    ntpot_ms_p50 FLOAT,
    ntpot_ms_p90 FLOAT,
    ntpot_ms_p95 FLOAT,
    ntpot_ms_p99 FLOAT,
    client_lag_ms_p99 FLOAT,
    request_throughput FLOAT,
    output_throughput FLOAT,
    total_throughput FLOAT,
    goodput FLOAT,
    slo_attainment FLOAT,
    error_rate FLOAT,
    completed INTEGER,
    failed INTEGER,
    incomplete INTEGER,
    duration_s FLOAT,
    target_rate FLOAT,
    achieved_rate FLOAT,
    tokens_estimated BOOLEAN,
    invalid TEXT,
    schema_version INTEGER,
    summary JSONB NOT NULL,
    PRIMARY KEY (campaign_id, cell_id),
    FOREIGN KEY(campaign_id, cell_id) REFERENCES cells (campaign_id, cell_id) ON DELETE CASCADE
);

CREATE TABLE aggregates (
    campaign_id VARCHAR(128) NOT NULL,
    backend_name VARCHAR(128) NOT NULL,
    load_label VARCHAR(64) NOT NULL,
    metric VARCHAR(64) NOT NULL,
    n INTEGER NOT NULL,
    mean FLOAT,
    std FLOAT,
    ci_low FLOAT,
    ci_high FLOAT,
    ci_method VARCHAR(16),
    t_low FLOAT,
    t_high FLOAT,
    values JSONB NOT NULL,
    detail JSONB NOT NULL,
    PRIMARY KEY (campaign_id, backend_name, load_label, metric),
    FOREIGN KEY(campaign_id) REFERENCES campaigns (id) ON DELETE CASCADE
);

CREATE TABLE comparisons (
    campaign_id VARCHAR(128) NOT NULL,
    kind VARCHAR(16) NOT NULL,
    baseline_ref VARCHAR(256) NOT NULL,
    candidate_ref VARCHAR(256) NOT NULL,
    load_label VARCHAR(64) NOT NULL,
    metric VARCHAR(64) NOT NULL,
    ratio FLOAT,
    ci_low FLOAT,
    ci_high FLOAT,
    verdict VARCHAR(32) NOT NULL,
    tolerance FLOAT NOT NULL,
    baseline_campaign_id VARCHAR(128),
    detail JSONB NOT NULL,
    PRIMARY KEY (campaign_id, kind, baseline_ref, candidate_ref, load_label, metric),
    FOREIGN KEY(campaign_id) REFERENCES campaigns (id) ON DELETE CASCADE
);

CREATE TABLE gpu_health_reports (
    id VARCHAR(64) NOT NULL,
    hostname VARCHAR(255) NOT NULL,
    checked_at TIMESTAMP WITH TIME ZONE NOT NULL,
    healthy BOOLEAN NOT NULL,
    campaign_id VARCHAR(128),
    report JSONB NOT NULL,
    PRIMARY KEY (id)
);

CREATE INDEX ix_gpu_health_reports_campaign_id ON gpu_health_reports (campaign_id);

CREATE INDEX ix_gpu_health_reports_checked_at ON gpu_health_reports (checked_at);

CREATE INDEX ix_gpu_health_reports_hostname ON gpu_health_reports (hostname);

CREATE TABLE run_manifests (
    campaign_id VARCHAR(128) NOT NULL,
    git_commit VARCHAR(64),
    git_dirty BOOLEAN,
    hostname VARCHAR(255),
    python_version VARCHAR(64),
    os VARCHAR(255),
    benchflow_version VARCHAR(64),
    driver_version VARCHAR(64),
    cuda_version VARCHAR(64),
    packages JSONB NOT NULL,
    artifacts JSONB NOT NULL,
    manifest JSONB NOT NULL,
    PRIMARY KEY (campaign_id),
    FOREIGN KEY(campaign_id) REFERENCES campaigns (id) ON DELETE CASCADE
);

CREATE TABLE artifacts (
    campaign_id VARCHAR(128) NOT NULL,
    key VARCHAR(512) NOT NULL,
    uri TEXT NOT NULL,
    sha256 VARCHAR(64) NOT NULL,
    size_bytes BIGINT NOT NULL,
    created_at TIMESTAMP WITH TIME ZONE NOT NULL,
    PRIMARY KEY (campaign_id, key),
    FOREIGN KEY(campaign_id) REFERENCES campaigns (id) ON DELETE CASCADE
);

INSERT INTO alembic_version (version_num) VALUES ('0001') RETURNING alembic_version.version_num;

-- Running upgrade 0001 -> 0002

ALTER TABLE comparisons ADD COLUMN method VARCHAR(32);

ALTER TABLE comparisons ADD COLUMN reason TEXT;

UPDATE alembic_version SET version_num='0002' WHERE alembic_version.version_num = '0001';

COMMIT;
