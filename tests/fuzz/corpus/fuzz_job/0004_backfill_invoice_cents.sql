-- A multi-tenant table keyed by (tenant_id, id): walk the composite key,
-- each chunk a range of rows in (tenant_id, id) order; :lo and :hi each
-- stand for a whole key, compared as a row value.
-- sluice:table invoices
-- sluice:key tenant_id, id
-- sluice:batch 1000
-- sluice:undo snapshot(total_cents)

-- sluice:up
UPDATE invoices
   SET total_cents = CAST(round(total * 100) AS bigint)
 WHERE (tenant_id, id) BETWEEN :lo AND :hi
   AND total_cents IS NULL;
