-- Drops the forensics columns (and what they recorded).
ALTER TABLE webhook.delivery_attempts
    DROP COLUMN IF EXISTS remote_ip,
    DROP COLUMN IF EXISTS dns_ms,
    DROP COLUMN IF EXISTS connect_ms,
    DROP COLUMN IF EXISTS tls_ms,
    DROP COLUMN IF EXISTS first_byte_ms,
    DROP COLUMN IF EXISTS connection_reused,
    DROP COLUMN IF EXISTS via_proxy,
    DROP COLUMN IF EXISTS response_headers;
