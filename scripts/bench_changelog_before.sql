-- The change log's read of a layer's changes as oar-tiles sent it before issue 62 (commit 8b4d86f),
-- for the baseline of `scripts/bench.sh --sections changelog`: the same columns, the same
-- projection, with the counts of each log row's arrays in a lateral subquery after the unnest,
-- which PostgreSQL inlines into every geometry's row, reading and decompressing the arrays again
-- for each. Run with psql variables
--   log     the change log table, schema-qualified
--   table   the watched table, schema-qualified (as text)
-- and `statement_timeout` set by the caller (the read of 100,000 rows would take about an hour).
-- The rows go to /dev/null (`psql -o`): every column is computed, as the tool receives them.
SELECT c.everything, ST_SRID(v.g), ST_XMin(v.g), ST_YMin(v.g), ST_XMax(v.g), ST_YMax(v.g),
       ST_XMin(m.g), ST_YMin(m.g), ST_XMax(m.g), ST_YMax(m.g),
       ST_XMin(p.g), ST_YMin(p.g), ST_XMax(p.g), ST_YMax(p.g),
       CASE WHEN ST_Dimension(m.g) > 0 THEN ST_AsBinary(ST_Force2D(m.g)) END,
       CASE WHEN ST_Dimension(m.g) = 2 THEN (ST_IsValidDetail(m.g)).valid ELSE true END,
       c.id, CASE WHEN v.k > u.unpaired THEN (v.k - u.unpaired - 1) % u.pairs + 1 END,
       CASE WHEN v.k > u.unpaired THEN (v.k - u.unpaired - 1) / u.pairs END
FROM :log c
CROSS JOIN LATERAL unnest(ARRAY[c.old_geom, c.new_geom] || coalesce(c.old_geoms, '{}')
                          || coalesce(c.new_geoms, '{}') || coalesce(c.moved_from, '{}')
                          || coalesce(c.moved_to, '{}')) WITH ORDINALITY AS v(g, k)
CROSS JOIN LATERAL (SELECT 2 + coalesce(cardinality(c.old_geoms), 0)
                              + coalesce(cardinality(c.new_geoms), 0) AS unpaired,
                           greatest(coalesce(cardinality(c.moved_from), 0), 1) AS pairs) u
CROSS JOIN LATERAL (SELECT CASE WHEN ST_SRID(v.g) = 3857 THEN v.g ELSE ST_Transform(v.g, 3857) END AS g
                    OFFSET 0) m
CROSS JOIN LATERAL (SELECT CASE WHEN ST_SRID(v.g) = 3857
                                THEN (CASE WHEN ST_GeometryType(v.g) = 'ST_Point' THEN v.g
                                      ELSE ST_PointOnSurface(v.g) END)
                                ELSE ST_Transform(CASE WHEN ST_GeometryType(v.g) = 'ST_Point' THEN v.g
                                                  ELSE ST_PointOnSurface(v.g) END, 3857) END AS g
                    OFFSET 0) p
WHERE c.source = to_regclass(:'table')::oid AND (c.everything OR v.g IS NOT NULL);
