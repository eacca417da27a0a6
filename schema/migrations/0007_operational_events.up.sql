-- Operational events (docs/operational-events.md): when an endpoint is disabled, its circuit opens
-- or closes, a delivery becomes a dead letter or a rotated secret is about to expire, the producer
-- is told with a webhook, in the Svix shape, delivered like any other message to the endpoints of
-- one designated application: the operational application.
--
-- Expand only (schema/README.md): the previous release's workers never call the new function and
-- never read the new column; while they run side by side with this release, transitions they make
-- are simply not reported.

-- The operational application. Its id is fixed so that every worker and the SQL below agree on it
-- without configuration; its uid is `operational` unless a customer already has that uid (then it
-- has none, and is named by its id, app_00000000000000000000000000000001).
INSERT INTO webhook.applications (id, uid, name)
SELECT '00000000-0000-0000-0000-000000000001',
       CASE WHEN EXISTS (SELECT 1 FROM webhook.applications WHERE uid = 'operational') THEN NULL ELSE 'operational' END,
       'Operational events'
ON CONFLICT (id) DO NOTHING;

-- When the leader reported that this (previous) secret is about to expire: at most once per secret.
ALTER TABLE webhook.endpoint_secrets ADD COLUMN expiry_reported_at timestamptz;

-- Emits one operational event about an endpoint: enqueues `{"type": …, "data": {appId, appUid,
-- endpointId, endpointUid} ∪ data}` as a message of the operational application, fanned out to its
-- endpoints subscribed to `event_type`. Returns the message id, or NULL when nothing was emitted:
--   * the endpoint belongs to the operational application itself — an event about an operational
--     endpoint would be delivered to operational endpoints, whose failures would make more events:
--     never emitting those is what makes a loop impossible;
--   * the endpoint no longer exists, or the operational application was deleted.
-- It never raises for those cases, because it is called from inside the statements that make the
-- transitions (completion, circuit storage, lease reaping, maintenance): the event is written in
-- the same statement, so it exists exactly when the fenced transition does — once fleet-wide.
CREATE FUNCTION webhook.operational_event(event_type text, endpoint_id uuid, data jsonb)
RETURNS text
LANGUAGE sql VOLATILE AS $$
    SELECT q.message_id
    FROM webhook.endpoints e
    JOIN webhook.applications a ON a.id = e.application_id
    CROSS JOIN LATERAL webhook.enqueue(
        operational_event.event_type,
        jsonb_build_object(
            'type', operational_event.event_type,
            'data', jsonb_build_object(
                'appId', 'app_' || replace(a.id::text, '-', ''),
                'appUid', a.uid,
                'endpointId', 'ep_' || replace(e.id::text, '-', ''),
                'endpointUid', e.uid) || coalesce(operational_event.data, '{}'::jsonb))::json,
        NULL, NULL, '00000000-0000-0000-0000-000000000001', NULL) q
    WHERE e.id = operational_event.endpoint_id
      AND e.application_id <> '00000000-0000-0000-0000-000000000001'
      AND EXISTS (SELECT 1 FROM webhook.applications o WHERE o.id = '00000000-0000-0000-0000-000000000001')
$$;

-- The per-delivery events (message.attempt.exhausted, failing, recovered) in Svix's shape: the
-- message, the producer's event id and the attempt. Nothing for an endpoint that is disabled (its
-- endpoint.disabled covers its messages). A function so that the completion statement, planned
-- for every batch, only names it: its body is planned only when a row calls it.
CREATE FUNCTION webhook.attempt_event(
    event_type   text,
    endpoint_id  uuid,
    message_id   text,
    delivery_id  bigint,
    attempt      integer,
    attempted_at timestamptz,
    status_code  integer
) RETURNS text
LANGUAGE sql VOLATILE AS $$
    SELECT webhook.operational_event(attempt_event.event_type, attempt_event.endpoint_id, jsonb_build_object(
        'msgId', attempt_event.message_id,
        'msgEventId', (SELECT m.event_id FROM webhook.messages m WHERE m.id = attempt_event.message_id LIMIT 1),
        'lastAttempt', jsonb_build_object(
            'id', 'atmpt_' || attempt_event.delivery_id || '_' || attempt_event.attempt,
            'timestamp', attempt_event.attempted_at,
            -- 0: no answer (a transport error, a timeout, a refused address, an expired lease).
            'responseStatusCode', coalesce(attempt_event.status_code, 0))))
    WHERE NOT EXISTS (SELECT 1 FROM webhook.endpoints e WHERE e.id = attempt_event.endpoint_id AND e.state = 'disabled')
$$;
