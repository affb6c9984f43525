-- Command events the broker has acknowledged, up to a time: after a restart, events
-- from then on are published again (events_confirmed_through, ms since the epoch).
CREATE TABLE bridge_meta (
    key    TEXT PRIMARY KEY,
    value  INTEGER NOT NULL
);
CREATE INDEX command_history_by_time ON command_history (at);
