-- Back to one tenant: every endpoint stays, in no application.
DROP FUNCTION webhook.enqueue(text, json, text, uuid, text, text);
DROP FUNCTION webhook.application_id(text);
CREATE FUNCTION webhook.enqueue(
    event_type      text,
    payload         json,
    idempotency_key text DEFAULT NULL,
    endpoint_id     uuid DEFAULT NULL
) RETURNS TABLE (message_id text, deliveries integer, duplicate boolean)
LANGUAGE sql VOLATILE AS $$
    WITH msg AS (
        SELECT 'msg_' || replace(gen_random_uuid()::text, '-', '') AS id
    ), claimed_key AS (
        INSERT INTO webhook.idempotency_keys (key, message_id)
        SELECT enqueue.idempotency_key, msg.id FROM msg
        WHERE enqueue.idempotency_key IS NOT NULL
        ON CONFLICT (key) DO NOTHING
        RETURNING key
    ), fresh AS (
        SELECT enqueue.idempotency_key IS NULL OR EXISTS (SELECT 1 FROM claimed_key) AS yes
    ), inserted AS (
        INSERT INTO webhook.deliveries (message_id, endpoint_id, event_type, payload)
        SELECT msg.id, e.id, enqueue.event_type, enqueue.payload
        FROM webhook.endpoints e, msg, fresh
        WHERE fresh.yes
          AND e.state <> 'disabled'
          AND (enqueue.endpoint_id IS NULL OR e.id = enqueue.endpoint_id)
          AND (cardinality(e.event_types) = 0 OR enqueue.event_type = ANY (e.event_types))
        RETURNING 1
    )
    SELECT CASE WHEN fresh.yes THEN msg.id
                ELSE (SELECT k.message_id FROM webhook.idempotency_keys k WHERE k.key = enqueue.idempotency_key)
           END,
           (SELECT count(*)::integer FROM inserted),
           NOT fresh.yes
    FROM msg, fresh;
$$;
DROP TABLE webhook.api_tokens;
DROP TABLE webhook.event_types;
DROP TABLE webhook.messages;
DELETE FROM webhook.idempotency_keys a USING webhook.idempotency_keys b
    WHERE a.key = b.key AND a.application_id > b.application_id;
ALTER TABLE webhook.idempotency_keys DROP CONSTRAINT idempotency_keys_pkey;
ALTER TABLE webhook.idempotency_keys ADD PRIMARY KEY (key);
ALTER TABLE webhook.idempotency_keys DROP COLUMN application_id;
ALTER TABLE webhook.endpoints DROP COLUMN application_id, DROP COLUMN uid, DROP COLUMN metadata;
DROP TABLE webhook.applications;
