-- The audit registry, version 1 (SQLite). Keep in step with
-- ../postgres/0001_registry.sql: the same tables and columns; only the
-- byte type differs (BLOB here, BYTEA there). Times are Unix milliseconds.
CREATE TABLE models (
    sha256      TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    source      TEXT NOT NULL,
    revision    TEXT,
    provenance  TEXT NOT NULL,
    first_seen  BIGINT NOT NULL
);
CREATE TABLE revisions (
    source      TEXT NOT NULL,
    revision    TEXT NOT NULL,
    sha256      TEXT NOT NULL,
    first_seen  BIGINT NOT NULL,
    PRIMARY KEY (source, revision)
);
CREATE TABLE audits (
    id                 TEXT PRIMARY KEY,
    idem_key           TEXT NOT NULL UNIQUE,
    candidate_name     TEXT NOT NULL,
    candidate_sha256   TEXT,
    candidate_source   TEXT NOT NULL,
    candidate_revision TEXT,
    refs               TEXT NOT NULL,
    audit_digest       TEXT NOT NULL,
    suite_digest       TEXT NOT NULL,
    tool_version       TEXT NOT NULL,
    plugins            TEXT,
    job                TEXT NOT NULL,
    state              TEXT NOT NULL,
    verdict            TEXT,
    rule               TEXT,
    submitted_at       BIGINT NOT NULL,
    started_at         BIGINT,
    finished_at        BIGINT,
    worker             TEXT,
    lease_until        BIGINT,
    attempts           BIGINT NOT NULL,
    max_attempts       BIGINT NOT NULL,
    not_before         BIGINT NOT NULL,
    error              TEXT
);
CREATE INDEX audits_queue ON audits (state, not_before, submitted_at);
CREATE INDEX audits_candidate ON audits (candidate_sha256, submitted_at);
CREATE TABLE artifacts (
    audit_id    TEXT NOT NULL REFERENCES audits (id),
    name        TEXT NOT NULL,
    media_type  TEXT NOT NULL,
    sha256      TEXT NOT NULL,
    bytes       BLOB NOT NULL,
    PRIMARY KEY (audit_id, name)
);
CREATE TABLE deliveries (
    id           TEXT PRIMARY KEY,
    received_at  BIGINT NOT NULL,
    outcome      TEXT NOT NULL,
    audit_id     TEXT
);
CREATE TABLE workers (
    name        TEXT PRIMARY KEY,
    started_at  BIGINT NOT NULL,
    last_seen   BIGINT NOT NULL,
    current     TEXT,
    done        BIGINT NOT NULL,
    failed      BIGINT NOT NULL,
    state       TEXT NOT NULL
);
