-- Back to 0001's unthrottled autovacuum of the queue.
ALTER TABLE webhook.deliveries SET (autovacuum_vacuum_cost_delay = 0);
