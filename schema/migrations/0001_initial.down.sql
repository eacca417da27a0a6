-- Drops everything of webhook-delivery, queue and history included.
DROP FUNCTION IF EXISTS webhook.enqueue(text, json, text, uuid);
DROP TABLE IF EXISTS webhook.deliveries, webhook.dead_letters, webhook.delivery_attempts,
    webhook.endpoint_secrets, webhook.endpoints, webhook.idempotency_keys, webhook.workers,
    webhook.queue_stats CASCADE;
DROP FUNCTION IF EXISTS webhook.notify_deliveries();
