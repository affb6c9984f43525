-- SMS beside the cellular long poll (docs/contract.md, "SMS"): the highest request
-- counter a device has used in an SMS (its own, since an SMS can overtake a poll or
-- arrive after it), and the commands not yet delivered, looked for every second by
-- their age (`undelivered_before`) to be sent by SMS after `sms_after_s`.
ALTER TABLE devices ADD COLUMN sms_counter INTEGER;
CREATE INDEX commands_undelivered ON commands (created_at) WHERE state IN ('queued', 'scheduled', 'sent');
