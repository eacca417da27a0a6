-- The shard router: a small database in front of several webhook shards, so that producers keep
-- one connection string and one `webhook.enqueue()` while each application lives in one shard.
-- docs/scaling.md ("Past one primary: sharding") explains the design; schema/sharding/README.md
-- how to install it.
--
-- Needs PL/Proxy (Debian: postgresql-15-plproxy) and, before this file, its cluster:
--
--   CREATE EXTENSION plproxy;
--   CREATE SERVER webhook_shards FOREIGN DATA WRAPPER plproxy
--       OPTIONS (p0 'host=shard-a dbname=webhook', p1 'host=shard-b dbname=webhook');
--   CREATE USER MAPPING FOR PUBLIC SERVER webhook_shards OPTIONS (user 'producer', password '…');
--
-- The number of shards must be a power of two (PL/Proxy's rule); an application's shard is
-- `hashtext(uid) & (shards - 1)`. Safe to run again: it only (re)creates functions.

CREATE SCHEMA IF NOT EXISTS webhook;

-- The routing key: the application's uid, which the producer names its tenant by. An `app_…` id
-- or a uuid is refused: it is made by the shard that holds the application, so it cannot say which
-- shard that is, and the same application named two ways would hash to two shards.
CREATE OR REPLACE FUNCTION webhook.shard_key(app text) RETURNS integer
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF app IS NULL OR app = '' THEN
        RAISE EXCEPTION 'the shard router needs app: the uid of the application, which picks its shard'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'call webhook.enqueue(event_type, payload, app => ''<uid>'')';
    ELSIF app ~ '^app_[0-9a-f]{32}$'
          OR app ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' THEN
        RAISE EXCEPTION 'the shard router routes by application uid, not by id: %', app
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'name the application by the uid it was created with';
    END IF;
    RETURN hashtext(app);
END
$$;

-- The producer API, with the shards' signature: runs `webhook.enqueue()` on the application's
-- shard, as that shard's own transaction (at-least-once with an idempotency key; not atomic with
-- a change the producer makes in another database).
CREATE OR REPLACE FUNCTION webhook.enqueue(
    event_type      text,
    payload         json,
    idempotency_key text DEFAULT NULL,
    endpoint_id     uuid DEFAULT NULL,
    app             text DEFAULT NULL,
    event_id        text DEFAULT NULL
) RETURNS TABLE (message_id text, deliveries integer, duplicate boolean)
LANGUAGE plproxy AS $$
    CLUSTER 'webhook_shards';
    RUN ON webhook.shard_key(app);
$$;

-- Where an application lives: the shard's database, address and port, for the operator who
-- creates the application there (`webhook-worker app create` with that shard's DATABASE_URL).
CREATE OR REPLACE FUNCTION webhook.shard_of(app text)
RETURNS TABLE (database text, address text, port integer)
LANGUAGE plproxy AS $$
    CLUSTER 'webhook_shards';
    RUN ON webhook.shard_key(app);
    SELECT current_database()::text AS database,
           coalesce(host(inet_server_addr()), 'local socket') AS address,
           current_setting('port')::integer AS port;
$$;
