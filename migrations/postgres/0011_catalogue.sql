-- The catalogue and the addresses orders ship to (PostgreSQL flavour; migrations/sqlite holds
-- the same schema).

-- The built-in catalogue source (seeded from config/demo/catalogue.json in the demo).
CREATE TABLE products (
    sku TEXT PRIMARY KEY,
    -- JSON objects by language (en, es, ca): the product's name and description.
    names TEXT NOT NULL,
    descriptions TEXT NOT NULL DEFAULT '{}',
    price_cents BIGINT NOT NULL,
    currency TEXT NOT NULL,
    -- Units that can be sold now.
    stock BIGINT NOT NULL,
    -- 0: no longer sold (kept so that past orders still name it).
    active BIGINT NOT NULL DEFAULT 1,
    updated_at BIGINT NOT NULL
);

-- Where an order was sent, as one line of text; what a new order offers as its address.
ALTER TABLE orders ADD COLUMN shipping_address TEXT;
