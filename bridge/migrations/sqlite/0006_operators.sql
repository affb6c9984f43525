-- Operators (docs/contract.md, "Operators"): who asked for each command (`origin`:
-- "token:NAME", "mqtt" or "mqtt:REQUESTED_BY"), the batch it belongs to (a command to a
-- group), who last changed it through the API (`changed_by`, a cancellation), and the
-- origin of each history entry; and group memberships that came through the API or
-- ChirpStack's device tags (the configuration's are not stored).
ALTER TABLE commands ADD COLUMN origin TEXT;
ALTER TABLE commands ADD COLUMN batch_id TEXT;
ALTER TABLE commands ADD COLUMN changed_by TEXT;
ALTER TABLE command_history ADD COLUMN origin TEXT;
CREATE INDEX commands_by_batch ON commands (batch_id, state) WHERE batch_id IS NOT NULL;

CREATE TABLE group_members (
    group_name  TEXT NOT NULL,
    device      TEXT NOT NULL,   -- "{network}/{id}"
    source      TEXT NOT NULL,   -- "api" or "tag"
    PRIMARY KEY (group_name, device, source)
);
CREATE INDEX group_members_by_device ON group_members (device);

DROP TRIGGER command_created;
CREATE TRIGGER command_created AFTER INSERT ON commands
BEGIN
    INSERT INTO command_history (command_id, seq, state, at, reason, attempt, origin)
    VALUES (NEW.id, 1, NEW.state, NEW.updated_at, NEW.reason, NULL, NEW.origin);
END;

-- as before, and the entry's origin is whoever set `changed_by` in this statement
DROP TRIGGER command_changed;
CREATE TRIGGER command_changed AFTER UPDATE OF state ON commands
BEGIN
    INSERT INTO command_history (command_id, seq, state, at, reason, attempt, origin)
    VALUES (
        NEW.id,
        (SELECT COALESCE(MAX(seq), 0) + 1 FROM command_history WHERE command_id = NEW.id),
        NEW.state,
        NEW.updated_at,
        NEW.reason,
        CASE WHEN NEW.attempts > 0 AND NEW.state IN ('queued', 'scheduled', 'sent', 'delivered') THEN NEW.attempts END,
        CASE WHEN NEW.changed_by IS NOT OLD.changed_by THEN NEW.changed_by END
    );
END;
