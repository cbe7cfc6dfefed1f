CREATE TABLE IF NOT EXISTS {db}.sluice_events (
    topic String,
    partition Int32,
    offset Int64,
    tenant_id String,
    event_id String,
    type String,
    job_id String,
    queue String,
    endpoint_id String,
    target_url String,
    attempt Int32,
    status_code Int32,
    latency_us Int64,
    error String,
    outcome String,
    reason String,
    actor_kind String,
    actor_id String,
    causation_id String,
    occurred_at DateTime,
    occurred_at_us Int64,
    inserted_at DateTime
) ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(occurred_at)
ORDER BY (tenant_id, job_id, topic, partition, offset)
