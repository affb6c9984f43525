-- Devices the bridge has commanded, with their command counter and the network facts
-- needed to reach them after a restart.
CREATE TABLE devices (
    device          TEXT PRIMARY KEY,          -- "{network}/{id}"
    next_counter    INTEGER NOT NULL,          -- the next command counter, 0..=65535
    application_id  TEXT,                      -- ChirpStack application (for command/down)
    class           TEXT,                      -- LoRaWAN class: A, B or C
    quota_day       INTEGER,                   -- Sigfox: the day (days since epoch) of quota_used
    quota_used      INTEGER NOT NULL DEFAULT 0 -- Sigfox: downlinks taken that day
);

CREATE TABLE commands (
    id           TEXT PRIMARY KEY,             -- UUID, or the client's idempotency key
    device       TEXT NOT NULL,
    body         TEXT NOT NULL,                -- {"command": ..., "args": ...}
    counter      INTEGER NOT NULL,
    urgent       INTEGER NOT NULL,             -- lock/unlock go first
    confirmed    INTEGER NOT NULL,
    state        TEXT NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    created_at   INTEGER NOT NULL,             -- ms since the epoch
    expires_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    network_ref  TEXT,                         -- the downlink that carries it (ChirpStack queue item id)
    reason       TEXT                          -- why the last change happened, if it says
);
CREATE INDEX commands_by_device ON commands (device, created_at);
CREATE INDEX commands_queued ON commands (device, state) WHERE state = 'queued';
CREATE INDEX commands_by_ref ON commands (network_ref);
CREATE INDEX commands_open_expiry ON commands (expires_at) WHERE state IN ('queued', 'scheduled');

-- Every state change, in order, written by the triggers below so that a state change is
-- one statement.
CREATE TABLE command_history (
    command_id  TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    state       TEXT NOT NULL,
    at          INTEGER NOT NULL,
    reason      TEXT,
    attempt     INTEGER,
    PRIMARY KEY (command_id, seq)
);

CREATE TRIGGER command_created AFTER INSERT ON commands
BEGIN
    INSERT INTO command_history (command_id, seq, state, at, reason, attempt)
    VALUES (NEW.id, 1, NEW.state, NEW.updated_at, NEW.reason, NULL);
END;

-- Fires for every statement that sets `state` (even to the same value, such as a note
-- on a queued command): each such statement is one recorded change.
CREATE TRIGGER command_changed AFTER UPDATE OF state ON commands
BEGIN
    INSERT INTO command_history (command_id, seq, state, at, reason, attempt)
    VALUES (
        NEW.id,
        (SELECT COALESCE(MAX(seq), 0) + 1 FROM command_history WHERE command_id = NEW.id),
        NEW.state,
        NEW.updated_at,
        NEW.reason,
        CASE WHEN NEW.attempts > 0 AND NEW.state IN ('queued', 'scheduled', 'sent', 'delivered') THEN NEW.attempts END
    );
END;
