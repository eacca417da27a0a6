-- Operational events stop; the operational application stays (its endpoints and messages are
-- ordinary rows that the previous release reads like any other application's).
DROP FUNCTION webhook.attempt_event(text, uuid, text, bigint, integer, timestamptz, integer);
DROP FUNCTION webhook.operational_event(text, uuid, jsonb);
ALTER TABLE webhook.endpoint_secrets DROP COLUMN expiry_reported_at;
