-- The PostgreSQL store: the same tables as the SQLite store's migrations 0001-0006, in
-- one step (a PostgreSQL store starts at this schema). Times are ms since the epoch.

-- Devices the bridge has commanded, with their command counter, the network facts
-- needed to reach them, their quotas and their request counters. A shared daily quota
-- (every SMS together) is a row "quota/{name}", which no device id can name.
CREATE TABLE devices (
    device          TEXT PRIMARY KEY,          -- "{network}/{id}"
    next_counter    BIGINT NOT NULL,           -- the next command counter, 0..=65535
    application_id  TEXT,                      -- ChirpStack application (for command/down)
    class           TEXT,                      -- LoRaWAN class: A, B or C
    quota_day       BIGINT,                    -- the day (days since epoch) of quota_used
    quota_used      BIGINT NOT NULL DEFAULT 0, -- downlinks taken that day
    request_counter BIGINT,                    -- cellular: the highest request counter used
    sms_counter     BIGINT,                    -- SMS: the highest request counter used
    sms_seen        BIGINT NOT NULL DEFAULT 0  -- SMS: which of the 32 below it arrived
);

CREATE TABLE commands (
    id           TEXT PRIMARY KEY,             -- UUID, or the client's idempotency key
    seq          BIGINT GENERATED ALWAYS AS IDENTITY, -- arrival order (ties in the queue)
    device       TEXT NOT NULL,
    body         TEXT NOT NULL,                -- {"command": ..., "args": ...}
    counter      BIGINT NOT NULL,
    urgent       BOOLEAN NOT NULL,             -- lock/unlock go first
    confirmed    BOOLEAN NOT NULL,
    state        TEXT NOT NULL,
    attempts     BIGINT NOT NULL DEFAULT 0,
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL,
    network_ref  TEXT,                         -- the downlink that carries it
    reason       TEXT,                         -- why the last change happened, if it says
    origin       TEXT,                         -- "token:NAME", "mqtt" or "mqtt:REQUESTED_BY"
    batch_id     TEXT,                         -- the command to a group it belongs to
    changed_by   TEXT                          -- who last changed it through the API
);
CREATE INDEX commands_by_device ON commands (device, created_at);
CREATE INDEX commands_queued ON commands (device, state) WHERE state = 'queued';
CREATE INDEX commands_by_ref ON commands (network_ref);
CREATE INDEX commands_open_expiry ON commands (expires_at) WHERE state IN ('queued', 'scheduled');
CREATE INDEX commands_scheduled ON commands (updated_at) WHERE state = 'scheduled';
CREATE INDEX commands_undelivered ON commands (created_at) WHERE state IN ('queued', 'scheduled', 'sent');
CREATE INDEX commands_by_batch ON commands (batch_id, state) WHERE batch_id IS NOT NULL;

-- Every state change, in order, written by the triggers below so that a state change is
-- one statement.
CREATE TABLE command_history (
    command_id  TEXT NOT NULL,
    seq         BIGINT NOT NULL,
    hid         BIGINT GENERATED ALWAYS AS IDENTITY, -- the order changes were written in
    state       TEXT NOT NULL,
    at          BIGINT NOT NULL,
    reason      TEXT,
    attempt     BIGINT,
    origin      TEXT,
    PRIMARY KEY (command_id, seq)
);
CREATE INDEX command_history_by_time ON command_history (at);

CREATE FUNCTION command_created() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO command_history (command_id, seq, state, at, reason, attempt, origin)
    VALUES (NEW.id, 1, NEW.state, NEW.updated_at, NEW.reason, NULL, NEW.origin);
    RETURN NULL;
END $$;
CREATE TRIGGER command_created AFTER INSERT ON commands
    FOR EACH ROW EXECUTE FUNCTION command_created();

-- Fires for every statement that sets `state` (even to the same value): each is one
-- recorded change; its origin is whoever set `changed_by` in this statement.
CREATE FUNCTION command_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO command_history (command_id, seq, state, at, reason, attempt, origin)
    VALUES (
        NEW.id,
        (SELECT COALESCE(MAX(seq), 0) + 1 FROM command_history WHERE command_id = NEW.id),
        NEW.state,
        NEW.updated_at,
        NEW.reason,
        CASE WHEN NEW.attempts > 0 AND NEW.state IN ('queued', 'scheduled', 'sent', 'delivered') THEN NEW.attempts END,
        CASE WHEN NEW.changed_by IS DISTINCT FROM OLD.changed_by THEN NEW.changed_by END
    );
    RETURN NULL;
END $$;
CREATE TRIGGER command_changed AFTER UPDATE OF state ON commands
    FOR EACH ROW EXECUTE FUNCTION command_changed();

-- Command events the broker has acknowledged, up to a time (events_confirmed_through).
CREATE TABLE bridge_meta (
    key    TEXT PRIMARY KEY,
    value  BIGINT NOT NULL
);

-- Group memberships that came through the API or ChirpStack's device tags.
CREATE TABLE group_members (
    group_name  TEXT NOT NULL,
    device      TEXT NOT NULL,   -- "{network}/{id}"
    source      TEXT NOT NULL,   -- "api" or "tag"
    PRIMARY KEY (group_name, device, source)
);
CREATE INDEX group_members_by_device ON group_members (device);
