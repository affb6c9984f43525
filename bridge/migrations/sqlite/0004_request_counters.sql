-- The highest request counter each cellular device has used: a request whose counter is
-- not above it is a replay (docs/contract.md, "Cellular"), after a restart as well.
ALTER TABLE devices ADD COLUMN request_counter INTEGER;
