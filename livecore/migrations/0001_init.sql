-- Catalogue, shows, deals, orders, moderation audit.
CREATE TABLE products (
    id          text PRIMARY KEY,
    sku         text NOT NULL UNIQUE,
    name        text NOT NULL,
    price_cents bigint NOT NULL CHECK (price_cents >= 0),
    currency    char(3) NOT NULL,
    image_url   text,
    stock       integer NOT NULL CHECK (stock >= 0),
    created_at  bigint NOT NULL
);

CREATE TABLE shows (
    id                text PRIMARY KEY,
    title             text NOT NULL,
    status            text NOT NULL DEFAULT 'scheduled' CHECK (status IN ('scheduled', 'live', 'ended')),
    scheduled_at      bigint,
    started_at        bigint,
    ended_at          bigint,
    pinned_product_id text REFERENCES products(id),
    created_at        bigint NOT NULL
);

CREATE TABLE deals (
    id             text PRIMARY KEY,
    show_id        text NOT NULL REFERENCES shows(id),
    product_id     text NOT NULL REFERENCES products(id),
    price_cents    bigint NOT NULL CHECK (price_cents >= 0),
    currency       char(3) NOT NULL,
    quantity       integer NOT NULL CHECK (quantity > 0),
    per_user_limit integer NOT NULL CHECK (per_user_limit > 0),
    hold_ttl_s     integer NOT NULL CHECK (hold_ttl_s > 0),
    starts_at      bigint NOT NULL,
    ends_at        bigint NOT NULL,
    status         text NOT NULL DEFAULT 'live' CHECK (status IN ('live', 'ended')),
    end_reason     text,
    ended_at       bigint,
    -- The record of sold units; the CHECK is the last line against oversell.
    sold           integer NOT NULL DEFAULT 0 CHECK (sold >= 0 AND sold <= quantity),
    -- Unsold units go back to product stock exactly once, guarded by this flag.
    settled        boolean NOT NULL DEFAULT false
);
CREATE INDEX deals_show_idx ON deals (show_id);
CREATE UNIQUE INDEX deals_one_live_per_show ON deals (show_id) WHERE status = 'live';

CREATE TABLE orders (
    id             text PRIMARY KEY,
    reservation_id text NOT NULL UNIQUE,
    deal_id        text NOT NULL REFERENCES deals(id),
    show_id        text NOT NULL REFERENCES shows(id),
    user_id        text NOT NULL,
    qty            integer NOT NULL CHECK (qty > 0),
    price_cents    bigint NOT NULL,
    currency       char(3) NOT NULL,
    status         text NOT NULL DEFAULT 'paid',
    payment_ref    text NOT NULL,
    created_at     bigint NOT NULL
);
CREATE INDEX orders_show_idx ON orders (show_id, created_at);
CREATE INDEX orders_deal_idx ON orders (deal_id);

CREATE TABLE moderation_actions (
    id          bigserial PRIMARY KEY,
    show_id     text NOT NULL REFERENCES shows(id),
    actor_id    text NOT NULL,
    actor_role  text NOT NULL,
    action      text NOT NULL,
    target      text,
    reason      text,
    data        jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at  bigint NOT NULL
);
CREATE INDEX moderation_show_idx ON moderation_actions (show_id, id);

CREATE TABLE faq_rules (
    id         bigserial PRIMARY KEY,
    show_id    text NOT NULL REFERENCES shows(id),
    patterns   text[] NOT NULL,
    answer     text NOT NULL,
    created_at bigint NOT NULL
);
CREATE INDEX faq_show_idx ON faq_rules (show_id);
