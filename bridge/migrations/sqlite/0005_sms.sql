-- SMS beside the cellular long poll (docs/contract.md, "SMS"): the highest request
-- counter a device has used in an SMS (its own, since an SMS can overtake a poll or
-- arrive after it) and which of the 32 below it arrived (bit i: counter − i), so that
-- SMS the network delivers out of order are taken once each; and the commands not yet
-- delivered, looked for four times a second by their age (`undelivered_before`) to be
-- sent by SMS after `sms_after_s`.
ALTER TABLE devices ADD COLUMN sms_counter INTEGER;
ALTER TABLE devices ADD COLUMN sms_seen INTEGER NOT NULL DEFAULT 0;
CREATE INDEX commands_undelivered ON commands (created_at) WHERE state IN ('queued', 'scheduled', 'sent');
