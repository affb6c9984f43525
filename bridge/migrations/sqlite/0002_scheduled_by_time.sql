-- Hand-overs the network has not confirmed are looked for every second
-- (`unconfirmed_handovers`): scheduled commands by the time they were scheduled, without
-- reading the whole table.
CREATE INDEX commands_scheduled ON commands (updated_at) WHERE state = 'scheduled';
