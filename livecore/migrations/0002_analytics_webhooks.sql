-- Show analytics (per show per minute counters, viewer sessions) and webhooks
-- (endpoints, a durable outbox of events, deliveries, an attempt log).
-- See docs/analytics.md. Compatible with PostgreSQL 13+.

CREATE FUNCTION livecore_now_ms() RETURNS bigint LANGUAGE sql VOLATILE AS
$$ SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint $$;

-- ---------------------------------------------------------------- analytics

-- Counters bucketed per show per minute, written by every gateway node in
-- batched upserts (n = n + excluded.n). `dim` is an optional dimension
-- (the deal id of a claim, the product id of a pin), '' when none.
CREATE TABLE analytics_counters (
    show_id   text NOT NULL,
    minute_at bigint NOT NULL,
    metric    text NOT NULL,
    dim       text NOT NULL DEFAULT '',
    n         bigint NOT NULL,
    PRIMARY KEY (show_id, minute_at, metric, dim)
);

-- One row per viewer socket. user_id NULL = anonymous (counted per session).
-- An open session ends at its node's last heartbeat (analytics_nodes), so a
-- node that crashed does not leave viewers watching forever.
CREATE TABLE analytics_sessions (
    session_id text PRIMARY KEY,
    show_id    text NOT NULL,
    node_id    text NOT NULL,
    user_id    text,
    joined_at  bigint NOT NULL,
    left_at    bigint
);
CREATE INDEX analytics_sessions_show_idx ON analytics_sessions (show_id, joined_at);

-- One row per gateway process (node id + a per-start suffix).
CREATE TABLE analytics_nodes (
    node_id text PRIMARY KEY,
    seen_at bigint NOT NULL
);

-- ---------------------------------------------------------------- webhooks

CREATE TABLE webhook_endpoints (
    id          text PRIMARY KEY,
    url         text NOT NULL,
    events      text[] NOT NULL,
    secret      text NOT NULL,
    description text,
    active      boolean NOT NULL DEFAULT true,
    created_at  bigint NOT NULL,
    disabled_at bigint
);

-- The outbox: an event is written in the same transaction as the change it
-- reports (by the triggers below), so it exists if and only if the change
-- committed. Its id is the dedupe key receivers see on every attempt.
CREATE TABLE webhook_events (
    id         text PRIMARY KEY,
    type       text NOT NULL,
    show_id    text,
    data       jsonb NOT NULL,
    created_at bigint NOT NULL
);
CREATE INDEX webhook_events_created_idx ON webhook_events (created_at);

-- One delivery per (endpoint, event): the unique key is the dedupe guard.
-- Workers claim due rows with FOR UPDATE SKIP LOCKED and push next_attempt_at
-- forward by a lease; a worker that dies loses its lease, not the event.
CREATE TABLE webhook_deliveries (
    id              bigserial PRIMARY KEY,
    endpoint_id     text NOT NULL REFERENCES webhook_endpoints(id) ON DELETE CASCADE,
    event_id        text NOT NULL REFERENCES webhook_events(id) ON DELETE CASCADE,
    status          text NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'delivered', 'failed', 'cancelled')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at bigint NOT NULL,
    last_attempt_at bigint,
    last_status     integer,
    last_error      text,
    delivered_at    bigint,
    created_at      bigint NOT NULL,
    UNIQUE (endpoint_id, event_id)
);
CREATE INDEX webhook_deliveries_due_idx ON webhook_deliveries (next_attempt_at, id)
    WHERE status = 'pending';
CREATE INDEX webhook_deliveries_endpoint_idx ON webhook_deliveries (endpoint_id, id);
CREATE INDEX webhook_deliveries_event_idx ON webhook_deliveries (event_id);

-- The delivery log: one row per finished attempt.
CREATE TABLE webhook_attempts (
    id               bigserial PRIMARY KEY,
    delivery_id      bigint NOT NULL REFERENCES webhook_deliveries(id) ON DELETE CASCADE,
    attempt          integer NOT NULL,
    node_id          text,
    started_at       bigint NOT NULL,
    duration_ms      integer NOT NULL,
    status_code      integer,
    ok               boolean NOT NULL,
    error            text,
    response_excerpt text
);
CREATE INDEX webhook_attempts_delivery_idx ON webhook_attempts (delivery_id, id);

-- Enqueue one event for every active endpoint subscribed to its type, in the
-- caller's transaction. Returns the event id, or NULL when nobody subscribes
-- (then nothing is written: the hot path pays one lookup on a tiny table).
CREATE FUNCTION livecore_enqueue_webhook(p_type text, p_show text, p_data jsonb) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    v_id  text;
    v_now bigint := livecore_now_ms();
BEGIN
    IF NOT EXISTS (SELECT 1 FROM webhook_endpoints WHERE active AND p_type = ANY (events)) THEN
        RETURN NULL;
    END IF;
    v_id := 'evt_' || replace(gen_random_uuid()::text, '-', '');
    INSERT INTO webhook_events (id, type, show_id, data, created_at)
        VALUES (v_id, p_type, p_show, p_data, v_now);
    INSERT INTO webhook_deliveries (endpoint_id, event_id, next_attempt_at, created_at)
        SELECT id, v_id, v_now, v_now FROM webhook_endpoints
        WHERE active AND p_type = ANY (events)
        ORDER BY id;
    RETURN v_id;
END $$;

-- The triggers make every writer of orders, deals and shows emit its event
-- atomically: the outbox row commits (or rolls back) with the change.

CREATE FUNCTION livecore_wh_order_paid() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM livecore_enqueue_webhook('order.paid', NEW.show_id, jsonb_build_object(
        'show_id', NEW.show_id,
        'order', jsonb_build_object(
            'id', NEW.id, 'reservation_id', NEW.reservation_id, 'user_id', NEW.user_id,
            'deal_id', NEW.deal_id, 'show_id', NEW.show_id, 'qty', NEW.qty,
            'price_cents', NEW.price_cents, 'amount_cents', NEW.qty * NEW.price_cents,
            'currency', NEW.currency, 'status', NEW.status, 'payment_ref', NEW.payment_ref,
            'created_at', NEW.created_at)));
    RETURN NULL;
END $$;

CREATE TRIGGER webhook_order_paid AFTER INSERT ON orders
    FOR EACH ROW WHEN (NEW.status = 'paid') EXECUTE FUNCTION livecore_wh_order_paid();

CREATE FUNCTION livecore_wh_deal_started() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM livecore_enqueue_webhook('deal.started', NEW.show_id, jsonb_build_object(
        'show_id', NEW.show_id,
        'deal', jsonb_build_object(
            'id', NEW.id, 'product_id', NEW.product_id, 'price_cents', NEW.price_cents,
            'currency', NEW.currency, 'quantity', NEW.quantity,
            'remaining', NEW.quantity - NEW.sold, 'per_user_limit', NEW.per_user_limit,
            'hold_ttl_s', NEW.hold_ttl_s, 'starts_at', NEW.starts_at, 'ends_at', NEW.ends_at)));
    RETURN NULL;
END $$;

CREATE TRIGGER webhook_deal_started AFTER INSERT ON deals
    FOR EACH ROW WHEN (NEW.status = 'live') EXECUTE FUNCTION livecore_wh_deal_started();

CREATE FUNCTION livecore_wh_deal_ended() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM livecore_enqueue_webhook('deal.ended', NEW.show_id, jsonb_build_object(
        'show_id', NEW.show_id, 'deal_id', NEW.id, 'product_id', NEW.product_id,
        'reason', NEW.end_reason, 'sold', NEW.sold, 'quantity', NEW.quantity,
        'ended_at', NEW.ended_at));
    RETURN NULL;
END $$;

CREATE TRIGGER webhook_deal_ended AFTER UPDATE OF status ON deals
    FOR EACH ROW WHEN (OLD.status = 'live' AND NEW.status = 'ended')
    EXECUTE FUNCTION livecore_wh_deal_ended();

CREATE FUNCTION livecore_wh_show_status() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM livecore_enqueue_webhook(
        CASE NEW.status WHEN 'live' THEN 'show.started' ELSE 'show.ended' END,
        NEW.id, jsonb_build_object('show', jsonb_build_object(
            'id', NEW.id, 'title', NEW.title, 'status', NEW.status,
            'scheduled_at', NEW.scheduled_at, 'started_at', NEW.started_at,
            'ended_at', NEW.ended_at)));
    RETURN NULL;
END $$;

CREATE TRIGGER webhook_show_status AFTER UPDATE OF status ON shows
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status AND NEW.status IN ('live', 'ended'))
    EXECUTE FUNCTION livecore_wh_show_status();
