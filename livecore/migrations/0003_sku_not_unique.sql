-- PROTOCOL §3 does not make `sku` unique: two products (variants, re-imports,
-- another brand's catalogue on a shared install) may carry the same SKU, and a
-- client must not get a 409 the contract never mentions. Lookups stay indexed.
ALTER TABLE products DROP CONSTRAINT IF EXISTS products_sku_key;
CREATE INDEX IF NOT EXISTS products_sku_idx ON products (sku);
