-- Applications (tenants): one per customer of the producer. Every endpoint belongs to exactly one,
-- and fan-out never crosses applications.
--
-- Expand only (schema/README.md): workers and CLIs of the previous release keep working while
-- this is applied. They insert endpoints without an application (the column's default puts them
-- in the default application), call webhook.enqueue() with at most four positional arguments
-- (still accepted; it now fans out within the default application only, which is where all of
-- their endpoints are), and never read the new columns or tables.

CREATE TABLE webhook.applications (
    id                    uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    -- The producer's own id for this customer; unique when set.
    uid                   text        UNIQUE,
    name                  text        NOT NULL,
    -- Requests per second that this application's endpoints get unless they set their own.
    rate_limit_per_second integer,
    metadata              jsonb       NOT NULL DEFAULT '{}',
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT applications_uid_valid CHECK (uid ~ '^[a-zA-Z0-9._-]+$' AND char_length(uid) <= 256),
    CONSTRAINT applications_uid_not_an_id CHECK (uid !~ '^app_'),
    CONSTRAINT applications_name_not_empty CHECK (name <> ''),
    CONSTRAINT applications_rate_limit_positive CHECK (rate_limit_per_second IS NULL OR rate_limit_per_second > 0),
    CONSTRAINT applications_metadata_object CHECK (jsonb_typeof(metadata) = 'object')
);

-- The application of every endpoint that existed before applications did, and of endpoints that
-- a previous release's CLI creates during a rolling upgrade.
INSERT INTO webhook.applications (id, uid, name)
VALUES ('00000000-0000-0000-0000-000000000000', 'default', 'Default application');

-- Adding a NOT NULL column with a constant default is a catalogue change (no table rewrite).
ALTER TABLE webhook.endpoints
    ADD COLUMN application_id uuid NOT NULL DEFAULT '00000000-0000-0000-0000-000000000000'
        REFERENCES webhook.applications (id),
    ADD COLUMN uid text,
    ADD COLUMN metadata jsonb NOT NULL DEFAULT '{}',
    ADD CONSTRAINT endpoints_uid_valid CHECK (uid ~ '^[a-zA-Z0-9._-]+$' AND char_length(uid) <= 256),
    ADD CONSTRAINT endpoints_uid_not_an_id CHECK (uid !~ '^ep_'),
    ADD CONSTRAINT endpoints_metadata_object CHECK (jsonb_typeof(metadata) = 'object');
CREATE INDEX endpoints_application_idx ON webhook.endpoints (application_id, created_at, id);
CREATE UNIQUE INDEX endpoints_application_uid_idx ON webhook.endpoints (application_id, uid) WHERE uid IS NOT NULL;

-- Idempotency keys are scoped to the application: two customers may use the same key.
ALTER TABLE webhook.idempotency_keys
    ADD COLUMN application_id uuid NOT NULL DEFAULT '00000000-0000-0000-0000-000000000000';
ALTER TABLE webhook.idempotency_keys DROP CONSTRAINT idempotency_keys_pkey;
ALTER TABLE webhook.idempotency_keys ADD PRIMARY KEY (application_id, key);

-- The message store: one row per event (not per delivery), insert-only, partitioned by UTC day so
-- that retention is a partition drop. The management API lists and shows messages from here; the
-- hot queue row stays a delivery. A plain INSERT into webhook.deliveries bypasses it (such a
-- delivery has no stored message, and the API answers 404 for its message id).
CREATE TABLE webhook.messages (
    id             text        NOT NULL,
    application_id uuid        NOT NULL,
    event_type     text        NOT NULL,
    -- Svix's `eventId`: the producer's own id for the event, if it gave one.
    event_id       text,
    payload        json        NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (created_at, id)
) PARTITION BY RANGE (created_at);
CREATE INDEX messages_id_idx ON webhook.messages (id);
CREATE INDEX messages_application_idx ON webhook.messages (application_id, created_at, id);

DO $$
DECLARE
    day date;
BEGIN
    FOR day IN SELECT generate_series(current_date - 1, current_date + 7, interval '1 day')::date LOOP
        EXECUTE format(
            'CREATE TABLE IF NOT EXISTS webhook.%I PARTITION OF webhook.messages FOR VALUES FROM (%L) TO (%L)',
            'messages_' || to_char(day, 'YYYYMMDD'),
            day::timestamp AT TIME ZONE 'UTC',
            (day + 1)::timestamp AT TIME ZONE 'UTC');
    END LOOP;
END
$$;

-- Event types, for the API's catalogue (deliveries do not need them).
CREATE TABLE webhook.event_types (
    name        text        PRIMARY KEY,
    description text        NOT NULL DEFAULT '',
    archived    boolean     NOT NULL DEFAULT false,
    schemas     jsonb,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT event_types_name_valid CHECK (name ~ '^[a-zA-Z0-9._-]+$' AND char_length(name) <= 256)
);

-- API tokens: only a SHA-256 of the token is stored. A token with an application sees only it.
CREATE TABLE webhook.api_tokens (
    id             uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    name           text        NOT NULL,
    application_id uuid        REFERENCES webhook.applications (id) ON DELETE CASCADE,
    token_sha256   bytea       NOT NULL UNIQUE,
    created_at     timestamptz NOT NULL DEFAULT now(),
    last_used_at   timestamptz,
    revoked_at     timestamptz,
    CONSTRAINT api_tokens_hash_length CHECK (octet_length(token_sha256) = 32),
    CONSTRAINT api_tokens_name_not_empty CHECK (name <> '')
);

-- An application id from what a producer names it by: `app_<32 hex>`, the bare uuid, or its uid;
-- NULL names the default application. Raises `no_data_found` naming the application otherwise.
-- Each form is one index lookup.
CREATE FUNCTION webhook.application_id(app text) RETURNS uuid
LANGUAGE plpgsql STABLE AS $$
DECLARE
    found uuid;
BEGIN
    IF app IS NULL THEN
        RETURN '00000000-0000-0000-0000-000000000000';
    ELSIF app ~ '^app_[0-9a-f]{32}$' THEN
        SELECT a.id INTO found FROM webhook.applications a WHERE a.id = substr(app, 5)::uuid;
    ELSIF app ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' THEN
        SELECT a.id INTO found FROM webhook.applications a WHERE a.id = app::uuid;
    END IF;
    IF found IS NULL THEN
        SELECT a.id INTO found FROM webhook.applications a WHERE a.uid = app;
    END IF;
    IF found IS NULL THEN
        RAISE EXCEPTION 'webhook.enqueue: no application %', app USING ERRCODE = 'no_data_found',
            HINT = 'name it by its id (app_…) or its uid; create it with `webhook-worker app create`';
    END IF;
    RETURN found;
END
$$;

-- The producer API, per application. Fans one event out to the application's active endpoints
-- subscribed to its type (or to the one endpoint given, if it is the application's), all sharing
-- one message id, and stores the message. `app` is an application id (`app_…` or its uuid) or
-- uid; without it, the endpoint's application when one is named, else the default application. With an idempotency key seen before in the same
-- application, nothing is enqueued and the first call's message id is returned.
-- An unknown application raises an error naming it (the producer's transaction fails, loudly).
DROP FUNCTION webhook.enqueue(text, json, text, uuid);
CREATE FUNCTION webhook.enqueue(
    event_type      text,
    payload         json,
    idempotency_key text DEFAULT NULL,
    endpoint_id     uuid DEFAULT NULL,
    app             text DEFAULT NULL,
    event_id        text DEFAULT NULL
) RETURNS TABLE (message_id text, deliveries integer, duplicate boolean)
LANGUAGE sql VOLATILE AS $$
    WITH target AS (
        -- Naming only an endpoint targets that endpoint's application.
        SELECT CASE WHEN enqueue.app IS NULL AND enqueue.endpoint_id IS NOT NULL
                    THEN coalesce((SELECT e.application_id FROM webhook.endpoints e WHERE e.id = enqueue.endpoint_id),
                                  '00000000-0000-0000-0000-000000000000'::uuid)
                    ELSE webhook.application_id(enqueue.app) END AS id
    ), msg AS (
        SELECT 'msg_' || replace(gen_random_uuid()::text, '-', '') AS id
    ), claimed_key AS (
        INSERT INTO webhook.idempotency_keys (application_id, key, message_id)
        SELECT target.id, enqueue.idempotency_key, msg.id FROM msg, target
        WHERE enqueue.idempotency_key IS NOT NULL
        ON CONFLICT (application_id, key) DO NOTHING
        RETURNING key
    ), fresh AS (
        SELECT enqueue.idempotency_key IS NULL OR EXISTS (SELECT 1 FROM claimed_key) AS yes
    ), stored AS (
        INSERT INTO webhook.messages (id, application_id, event_type, event_id, payload)
        SELECT msg.id, target.id, enqueue.event_type, enqueue.event_id, enqueue.payload
        FROM msg, target, fresh
        WHERE fresh.yes
    ), inserted AS (
        INSERT INTO webhook.deliveries (message_id, endpoint_id, event_type, payload)
        SELECT msg.id, e.id, enqueue.event_type, enqueue.payload
        FROM webhook.endpoints e, msg, fresh, target
        WHERE fresh.yes
          AND e.application_id = target.id
          AND e.state <> 'disabled'
          AND (enqueue.endpoint_id IS NULL OR e.id = enqueue.endpoint_id)
          AND (cardinality(e.event_types) = 0 OR enqueue.event_type = ANY (e.event_types))
        RETURNING 1
    )
    SELECT CASE WHEN fresh.yes THEN msg.id
                ELSE (SELECT k.message_id FROM webhook.idempotency_keys k, target
                      WHERE k.application_id = target.id AND k.key = enqueue.idempotency_key)
           END,
           (SELECT count(*)::integer FROM inserted),
           NOT fresh.yes
    FROM msg, fresh;
$$;

