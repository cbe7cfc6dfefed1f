CREATE TABLE IF NOT EXISTS {db}.sluice_attempts (
    tenant_id String,
    job_id String,
    queue String,
    endpoint_id String,
    target_url String,
    attempt Int32,
    status_code Int32,
    latency_us Int64,
    error String,
    response_excerpt String,
    outcome String,
    actor_id String,
    started_at DateTime,
    started_at_us Int64,
    topic String,
    partition Int32,
    offset Int64,
    inserted_at DateTime
) ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(started_at)
ORDER BY (tenant_id, job_id, topic, partition, offset)
