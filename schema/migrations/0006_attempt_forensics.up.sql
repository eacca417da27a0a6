-- Forensics of each attempt in the history (issue 16): the address the worker dialled, the time
-- spent in each phase of the connection, and a bounded excerpt of the response headers (the
-- body's excerpt is already `response_excerpt`).
--
-- Expand only: nullable columns without defaults, so adding them to the partitioned table (and
-- every partition, which inherit them) changes only the catalog. Workers of the previous release
-- keep inserting without them (the rows get NULLs, as do attempts that sent nothing).
--
-- - remote_ip: the address connected to; through the egress proxy, the checked address the proxy
--   was asked to CONNECT to. NULL when the request went over a reused proxied connection.
-- - dns_ms, connect_ms, tls_ms: NULL on a reused connection (they belong to an earlier attempt),
--   and tls_ms also NULL where the handshake is not measured apart (then connect_ms includes it).
-- - first_byte_ms: from sending until the response head arrived. The total is duration_ms.
-- - connection_reused: the request went over a pooled connection.
-- - via_proxy: the request went through WEBHOOK_PROXY_URL.
-- - response_headers: `name: value` lines, at most 1 KiB.
--
-- Retention is unchanged: the columns live and die with their day's partition.
ALTER TABLE webhook.delivery_attempts
    ADD COLUMN IF NOT EXISTS remote_ip inet,
    ADD COLUMN IF NOT EXISTS dns_ms integer,
    ADD COLUMN IF NOT EXISTS connect_ms integer,
    ADD COLUMN IF NOT EXISTS tls_ms integer,
    ADD COLUMN IF NOT EXISTS first_byte_ms integer,
    ADD COLUMN IF NOT EXISTS connection_reused boolean,
    ADD COLUMN IF NOT EXISTS via_proxy boolean,
    ADD COLUMN IF NOT EXISTS response_headers text;
