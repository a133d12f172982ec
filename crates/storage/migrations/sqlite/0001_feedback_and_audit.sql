-- Feedback and audit trail (SQLite). Kept column for column identical to
-- ../postgres/0001_feedback_and_audit.sql: the same queries run on both.
-- Times are milliseconds since the Unix epoch (UTC).

CREATE TABLE feedback (
    id                   INTEGER PRIMARY KEY AUTOINCREMENT,
    received_ms          INTEGER NOT NULL,
    service              TEXT    NOT NULL,
    card_uuid            TEXT    NOT NULL,
    outcome              TEXT    NOT NULL CHECK (outcome IN ('accepted', 'overridden')),
    outcome_timestamp    TEXT    NOT NULL,
    accepted_suggestions TEXT    NOT NULL, -- JSON array of suggestion uuids
    reason_system        TEXT,
    reason_code          TEXT,
    reason_display       TEXT,
    user_comment         TEXT,
    -- False when no audit record mentions the card (feedback for a card this deployment
    -- never issued): kept, and reported apart. Set when the card's audit record arrives.
    card_known           BOOLEAN NOT NULL,
    -- An EHR re-posting the same feedback after a lost answer is acknowledged, not counted twice.
    UNIQUE (service, card_uuid, outcome, outcome_timestamp)
);
CREATE INDEX feedback_received ON feedback (received_ms);
CREATE INDEX feedback_unknown_card ON feedback (card_uuid) WHERE NOT card_known;

CREATE TABLE audit_event (
    id            TEXT    PRIMARY KEY, -- uuid v4 made when the evaluation answered
    at_ms         INTEGER NOT NULL,
    service       TEXT    NOT NULL,
    hook_instance TEXT    NOT NULL,
    patient_hash  TEXT    NOT NULL,    -- HMAC-SHA256 of patientId under the configured secret
    card_count    INTEGER NOT NULL
);
CREATE INDEX audit_event_at ON audit_event (at_ms);
CREATE INDEX audit_event_patient ON audit_event (patient_hash);

CREATE TABLE audit_card (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id  TEXT    NOT NULL REFERENCES audit_event (id),
    at_ms     INTEGER NOT NULL,
    uuid      TEXT    NOT NULL,
    topic     TEXT    NOT NULL,
    indicator TEXT    NOT NULL,
    molecule  TEXT,
    factors   TEXT    NOT NULL -- JSON array of factor codes
);
CREATE INDEX audit_card_uuid ON audit_card (uuid);
CREATE INDEX audit_card_at ON audit_card (at_ms);

CREATE TABLE jakguard_meta (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
