-- One row per evaluation (SQLite). Kept identical to ../postgres/0002_cards_in_their_event.sql
-- but for `WITHOUT ROWID`.
--
-- Why: every audit record cost one B-tree insertion per table and per index it touched. The
-- first schema had a row per card (its table, an index on uuid, an index on time) and two
-- indexes on audit_event no query used (time: the reports read cards by time; patient_hash:
-- nothing reads it by value). With the patients and card uuids of real traffic, spread over
-- the whole key space, each random insertion dirties its own page: the writer spent about
-- 60 us of CPU per record, a whole core at 17,000 evaluations/s. Now a call's cards are one
-- JSON column of its event, and a narrow table keyed by card uuid says which evaluations
-- returned each card (feedback and the report look cards up by uuid).

ALTER TABLE audit_event ADD COLUMN cards TEXT NOT NULL DEFAULT '[]'; -- JSON array, see sql.rs

-- Every card, in the order it was written, into its event's row: grouped in one pass (a
-- subquery per event would scan audit_card once per event: it has no index on event_id).
UPDATE audit_event SET cards = grouped.cards
FROM (
    SELECT event_id,
           json_group_array(json_object(
               'uuid', uuid, 'topic', topic, 'indicator', indicator, 'molecule', molecule,
               'factors', CASE WHEN json_valid(factors) THEN json(factors) ELSE json_array() END
           ) ORDER BY id) AS cards
    FROM audit_card
    GROUP BY event_id
) AS grouped
WHERE grouped.event_id = audit_event.id;

-- Which evaluations returned a card: the latest first when read backwards by time.
CREATE TABLE audit_card_event (
    uuid     TEXT    NOT NULL,
    at_ms    INTEGER NOT NULL,
    event_id TEXT    NOT NULL REFERENCES audit_event (id),
    PRIMARY KEY (uuid, at_ms, event_id)
) WITHOUT ROWID;
INSERT INTO audit_card_event (uuid, at_ms, event_id)
SELECT uuid, at_ms, event_id FROM audit_card
WHERE true -- SQLite's parser needs a WHERE before an upsert's ON
ON CONFLICT DO NOTHING;

-- audit_card stays, emptied, for one release: during a rolling update the pods of the
-- previous release keep writing a row per card there until they are replaced, and this
-- release's audit writer moves such rows into their event and audit_card_event (see
-- `bulk.rs`, `fold_legacy_cards`). A later migration drops it.
DELETE FROM audit_card;
DROP INDEX audit_event_patient;
-- audit_event_at stays: the report reads the events of a period.
