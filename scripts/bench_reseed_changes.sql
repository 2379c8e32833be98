-- The reseed benchmark's edit burst (scripts/bench.sh): :n deterministic pseudo-random changes to
-- :"schema".facilities in one transaction, about 35% moves to random positions within the hub areas,
-- 35% name edits, 15% inserts of new facilities (in hub areas too) and the rest deletes. Each change
-- touches a different facility. Randomness comes from setseed(:seed) and random(), which repeat on the
-- same PostgreSQL version (the sample itself avoids random(); this burst only needs to repeat here).
--
-- The table is also marked with a comment, in the same transaction, so that bench.sh reloads the
-- sample before using it again even if it never got to restore it. Prints one line:
--   moves=M edits=E inserts=I deletes=D

\set ON_ERROR_STOP on
SET client_min_messages = warning;
BEGIN;
SELECT setseed(:seed) \g /dev/null

-- Hub centres and the size of their manufacturing areas, as in scripts/sample-facilities.sql.
CREATE TEMP TABLE bench_hub (id int, cc text, lon float8, lat float8, spread_km float8) ON COMMIT DROP;
INSERT INTO bench_hub VALUES
 ( 1, 'BD',  90.4125,  23.8103,  8), ( 2, 'BD',  90.4203,  23.9999, 10), ( 3, 'BD',  90.5000,  23.6238,  6),
 ( 4, 'BD',  91.8123,  22.3569,  8), ( 5, 'CN', 113.2644,  23.1291, 20), ( 6, 'CN', 113.7518,  23.0207, 15),
 ( 7, 'CN', 114.0579,  22.5431, 12), ( 8, 'CN', 121.5440,  29.8683, 15), ( 9, 'CN', 120.5810,  30.0023, 12),
 (10, 'CN', 118.6759,  24.8741, 15), (11, 'VN', 106.6297,  10.8231, 15), (12, 'VN', 105.8342,  21.0278, 15),
 (13, 'IN',  77.3411,  11.1085,  8), (14, 'IN',  77.5946,  12.9716, 12), (15, 'IN',  77.0266,  28.4595, 18),
 (16, 'IN',  75.8573,  30.9010,  8), (17, 'IN',  72.8777,  19.0760, 10), (18, 'TR',  28.9784,  41.0082, 15),
 (19, 'TR',  29.0610,  40.1885, 10), (20, 'PK',  67.0011,  24.8607, 12), (21, 'PK',  74.3587,  31.5204, 12),
 (22, 'PK',  73.1350,  31.4504,  8), (23, 'KH', 104.9282,  11.5564, 12), (24, 'ID', 106.8456,  -6.2088, 20),
 (25, 'ID', 107.6191,  -6.9175, 12), (26, 'LK',  79.8612,   6.9271, 15), (27, 'MM',  96.1735,  16.8409, 12),
 (28, 'US',-118.2437,  34.0522, 12), (29, 'PT',  -8.6291,  41.1579, 15), (30, 'IT',  11.1022,  43.8777,  6);

-- How many of each kind.
CREATE TEMP TABLE bench_mix ON COMMIT DROP AS
SELECT moves, edits, inserts, :n - moves - edits - inserts AS deletes
FROM (SELECT round(:n * 0.35)::int AS moves, round(:n * 0.35)::int AS edits,
             round(:n * 0.15)::int AS inserts) m;

-- Distinct existing facilities for the moves, edits and deletes, in the order first drawn. The
-- random() calls run in generate_series order; ids are drawn between the table's min and max id,
-- and only existing ones are kept.
CREATE TEMP TABLE bench_draw ON COMMIT DROP AS
SELECT g AS ord, lo + floor(random() * (hi - lo + 1))::bigint AS id
FROM (SELECT min(id) AS lo, max(id) AS hi FROM :"schema".facilities) b,
     generate_series(1, 20 * :n) g;
CREATE TEMP TABLE bench_pick ON COMMIT DROP AS
SELECT row_number() OVER (ORDER BY first) AS k, id
FROM (SELECT d.id, min(d.ord) AS first
      FROM bench_draw d JOIN :"schema".facilities f ON f.id = d.id
      GROUP BY d.id) t
ORDER BY first
LIMIT (SELECT moves + edits + deletes FROM bench_mix);

-- Random positions within hub areas (a square of +- spread_km around a hub centre), for the moves
-- and then the inserts. Subquery first, so random() is called in generate_series order.
CREATE TEMP TABLE bench_spot ON COMMIT DROP AS
SELECT s.g AS k, h.cc,
       round((h.lon + (2 * s.r2 - 1) * h.spread_km / (111.32 * cos(radians(h.lat))))::numeric, 6)::float8 AS lon,
       round((h.lat + (2 * s.r3 - 1) * h.spread_km / 111.32)::numeric, 6)::float8 AS lat
FROM (SELECT g, random() AS r1, random() AS r2, random() AS r3
      FROM generate_series(1, (SELECT moves + inserts FROM bench_mix)) g
      OFFSET 0) s
JOIN bench_hub h ON h.id = 1 + floor(s.r1 * 30)::int;

UPDATE :"schema".facilities f
SET location = ST_SetSRID(ST_MakePoint(s.lon, s.lat), 4326), updated_at = '2026-01-01 00:00:00+00'
FROM bench_pick p JOIN bench_spot s ON s.k = p.k
WHERE f.id = p.id AND p.k <= (SELECT moves FROM bench_mix);

UPDATE :"schema".facilities f
SET name = f.name || ' (renamed ' || p.k || ')', updated_at = '2026-01-01 00:00:00+00'
FROM bench_pick p, bench_mix m
WHERE f.id = p.id AND p.k > m.moves AND p.k <= m.moves + m.edits;

DELETE FROM :"schema".facilities f
USING bench_pick p, bench_mix m
WHERE f.id = p.id AND p.k > m.moves + m.edits;

INSERT INTO :"schema".facilities
    (id, os_id, name, address, country_code, contributors, created_at, updated_at, location)
SELECT b.hi + i, 'ZZBENCH' || lpad(i::text, 8, '0'), 'Bench New Facility ' || i,
       i || ' Bench Street', s.cc, 1, '2026-01-01 00:00:00+00', '2026-01-01 00:00:00+00',
       ST_SetSRID(ST_MakePoint(s.lon, s.lat), 4326)
FROM bench_mix m, (SELECT max(id) AS hi FROM :"schema".facilities) b,
     generate_series(1, m.inserts) i, bench_spot s
WHERE s.k = m.moves + i;

COMMENT ON TABLE :"schema".facilities IS 'modified by scripts/bench.sh (reseed); reload before use';

SELECT format('moves=%s edits=%s inserts=%s deletes=%s', moves, edits, inserts, deletes) FROM bench_mix;
COMMIT;
