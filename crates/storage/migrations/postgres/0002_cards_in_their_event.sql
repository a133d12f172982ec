-- One row per evaluation (PostgreSQL). Kept identical to ../sqlite/0002_cards_in_their_event.sql
-- but for its JSON functions and `WITHOUT ROWID`; the reasons are written there.

ALTER TABLE audit_event ADD COLUMN cards TEXT NOT NULL DEFAULT '[]'; -- JSON array, see sql.rs

UPDATE audit_event SET cards = grouped.cards
FROM (
    SELECT event_id,
           json_agg(json_build_object(
               'uuid', uuid, 'topic', topic, 'indicator', indicator, 'molecule', molecule,
               -- As jakguard wrote them (serde_json: an array of strings, no spaces); anything
               -- else, which only a hand edit could have left, becomes an empty list rather
               -- than stopping the migration (PostgreSQL 15 has no `IS JSON`).
               'factors', CASE WHEN factors ~ '^\[("([^"\\]|\\(["\\/bfnrt]|u[0-9a-fA-F]{4}))*"(,"([^"\\]|\\(["\\/bfnrt]|u[0-9a-fA-F]{4}))*")*)?\]$'
                               THEN factors::json ELSE '[]'::json END
           ) ORDER BY id)::text AS cards
    FROM audit_card
    GROUP BY event_id
) AS grouped
WHERE grouped.event_id = audit_event.id;

CREATE TABLE audit_card_event (
    uuid     TEXT    NOT NULL,
    at_ms    BIGINT  NOT NULL,
    event_id TEXT    NOT NULL REFERENCES audit_event (id),
    PRIMARY KEY (uuid, at_ms, event_id)
);
INSERT INTO audit_card_event (uuid, at_ms, event_id)
SELECT uuid, at_ms, event_id FROM audit_card
ON CONFLICT DO NOTHING;

-- audit_card stays, emptied, for one release: during a rolling update the pods of the
-- previous release keep writing a row per card there until they are replaced, and this
-- release's audit writer moves such rows into their event and audit_card_event (see
-- `bulk.rs`, `fold_legacy_cards`). A later migration drops it.
DELETE FROM audit_card;
DROP INDEX audit_event_patient;
