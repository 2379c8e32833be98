-- Times writes to a copy of a sample table with change capture's triggers disabled ("off"),
-- enabled ("on"), and replaced by the row trigger of oar-tiles 0.1's first design ("row", written
-- out below for the sample's columns, as a reference) alone and together with the statement
-- trigger that notified `watch` in the versions before the capture triggers notified themselves
-- ("rownotify": the row design with the notification every design now owes), and replaced by
-- statement triggers with the same transition tables and an empty body ("floor": what PostgreSQL
-- charges for capturing the transition tables, which any design reading them pays), each write in
-- its own transaction that is rolled back, so every round starts from the same table. Run by
-- `scripts/bench.sh --sections capture` with psql variables
--   table   the table, schema-qualified and quoted (bench_capture.facilities, or bench_capture.lean:
--           the same rows with text ids, a primary key and one GiST index only)
--   rounds  rounds per write and variant (the report takes the median)
--   singles single-row UPDATEs timed together in the `single-row` case
--   log     the change log table (schema-qualified) the row trigger writes to
-- Prints one NOTICE line per measurement: `capture <case> <off|on|row> <round> <ms> <cpu ms>`, the
-- second the CPU time of the server process (Linux schedstat, readable by a superuser; `-` where it
-- cannot be read): on a machine shared with other work it varies far less than the wall time.
SET bench.change_log = :'log';
DO $make$
BEGIN
    EXECUTE format($f$
        CREATE OR REPLACE FUNCTION pg_temp.bench_row_capture() RETURNS trigger LANGUAGE plpgsql AS $body$
        BEGIN
            IF TG_OP = 'INSERT' THEN
                INSERT INTO %1$s (source, new_geom) VALUES (TG_RELID, NEW.location);
            ELSIF TG_OP = 'DELETE' THEN
                INSERT INTO %1$s (source, old_geom) VALUES (TG_RELID, OLD.location);
            ELSIF (OLD.os_id, OLD.name, OLD.address, OLD.country_code, OLD.contributors, OLD.id, OLD.location)
                  IS DISTINCT FROM
                  (NEW.os_id, NEW.name, NEW.address, NEW.country_code, NEW.contributors, NEW.id, NEW.location) THEN
                INSERT INTO %1$s (source, old_geom, new_geom) VALUES (TG_RELID, OLD.location, NEW.location);
            END IF;
            RETURN NULL;
        END $body$$f$, current_setting('bench.change_log'));
END
$make$;
CREATE OR REPLACE FUNCTION pg_temp.bench_empty() RETURNS trigger LANGUAGE plpgsql AS $body$
BEGIN
    RETURN NULL;
END $body$;
CREATE OR REPLACE FUNCTION pg_temp.bench_notify() RETURNS trigger LANGUAGE plpgsql AS $body$
BEGIN
    PERFORM pg_notify('bench_capture_reference', TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME);
    RETURN NULL;
END $body$;
-- Nanoseconds this server process has run on a CPU, or NULL where that cannot be read.
CREATE OR REPLACE FUNCTION pg_temp.bench_cpu_ns() RETURNS bigint LANGUAGE plpgsql AS $cpu$
BEGIN
    RETURN split_part(pg_read_file('/proc/' || pg_backend_pid() || '/schedstat'), ' ', 1)::bigint;
EXCEPTION WHEN OTHERS THEN
    RETURN NULL;
END
$cpu$;
SET bench.target_table = :'table';
SET bench.single_count = :'singles';
-- One measurement: `write` with the triggers as `variant` says, in the caller's transaction (which
-- the caller rolls back). Prints `capture <write> <variant> <round> <ms>`.
CREATE OR REPLACE FUNCTION pg_temp.bench_measure(write text, variant text, round int) RETURNS void
LANGUAGE plpgsql AS $bench$
DECLARE
    tbl text := current_setting('bench.target_table');
    singles int := current_setting('bench.single_count')::int;
    id_type text := (SELECT format_type(atttypid, NULL) FROM pg_attribute
                     WHERE attrelid = tbl::regclass AND attname = 'id');
    -- 20,000 of the 100,000 rows of the sample (every fifth id), as the issue's figures were taken;
    -- a text id ends in 0 or 5 where the number did.
    pick text := CASE WHEN id_type = 'text' THEN 'right(id, 1) IN (''0'', ''5'')' ELSE 'id % 5 = 0' END;
    copied_id text := CASE WHEN id_type = 'text' THEN 'id || ''-copy''' ELSE 'id + 100000000' END;
    ids text[];
    started timestamptz;
    cpu_started bigint;
    statement text := CASE write
        WHEN 'move' THEN 'UPDATE %1$s SET location = ST_SetSRID(ST_MakePoint(ST_X(location) + 0.001, ST_Y(location)), 4326) WHERE %2$s'
        WHEN 'rename' THEN 'UPDATE %1$s SET name = name || '' (renamed)'' WHERE %2$s'
        WHEN 'integer' THEN 'UPDATE %1$s SET contributors = contributors + 1 WHERE %2$s'
        WHEN 'unrendered' THEN 'UPDATE %1$s SET updated_at = updated_at + interval ''1 second'' WHERE %2$s'
        WHEN 'insert' THEN 'INSERT INTO %1$s SELECT %3$s, os_id || ''-copy'', name, address, country_code, contributors, created_at, updated_at, location FROM %1$s WHERE %2$s'
        WHEN 'delete' THEN 'DELETE FROM %1$s WHERE %2$s'
    END;
BEGIN
    IF variant <> 'on' THEN
        EXECUTE format('ALTER TABLE %s DISABLE TRIGGER USER', tbl);
    END IF;
    IF variant IN ('row', 'rownotify') THEN
        EXECUTE format('CREATE TRIGGER bench_row_capture AFTER INSERT OR UPDATE OR DELETE ON %s
                        FOR EACH ROW EXECUTE FUNCTION pg_temp.bench_row_capture()', tbl);
    END IF;
    IF variant = 'floor' THEN
        EXECUTE format('CREATE TRIGGER bench_floor_insert AFTER INSERT ON %1$s REFERENCING NEW TABLE AS oar_new
                            FOR EACH STATEMENT EXECUTE FUNCTION pg_temp.bench_empty();
                        CREATE TRIGGER bench_floor_update AFTER UPDATE ON %1$s
                            REFERENCING OLD TABLE AS oar_old NEW TABLE AS oar_new
                            FOR EACH STATEMENT EXECUTE FUNCTION pg_temp.bench_empty();
                        CREATE TRIGGER bench_floor_delete AFTER DELETE ON %1$s REFERENCING OLD TABLE AS oar_old
                            FOR EACH STATEMENT EXECUTE FUNCTION pg_temp.bench_empty()', tbl);
    END IF;
    IF variant = 'rownotify' THEN
        EXECUTE format('CREATE TRIGGER bench_notify AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON %s
                        FOR EACH STATEMENT EXECUTE FUNCTION pg_temp.bench_notify()', tbl);
    END IF;
    -- The first ids in the id's order (the sample's are consecutive numbers).
    EXECUTE format('SELECT array_agg(id::text ORDER BY id) FROM (SELECT id FROM %s ORDER BY id LIMIT %s) f',
                   tbl, singles) INTO ids;
    cpu_started := pg_temp.bench_cpu_ns();
    started := clock_timestamp();
    IF write = 'single-row' THEN
        FOR i IN 1..singles LOOP
            EXECUTE format('UPDATE %s SET name = name || ''.'' WHERE id = $1::%s', tbl, id_type) USING ids[i];
        END LOOP;
    ELSE
        EXECUTE format(statement, tbl, pick, copied_id);
    END IF;
    RAISE NOTICE 'capture % % % % %', write, variant, round,
        round((extract(epoch FROM clock_timestamp() - started) * 1000)::numeric, 2),
        coalesce(round((pg_temp.bench_cpu_ns() - cpu_started) / 1e6, 2)::text, '-');
END
$bench$;
-- Each measurement in its own transaction, rolled back, as an application's statements would run;
-- the order of the variants rotates from round to round, so none always meets a warmer cache.
SELECT format('BEGIN; SELECT pg_temp.bench_measure(%L, %L, %s); ROLLBACK;', w, v, r)
FROM generate_series(1, :rounds) r,
     unnest(ARRAY['move', 'rename', 'integer', 'unrendered', 'insert', 'delete', 'single-row'])
         WITH ORDINALITY AS c(w, wi),
     unnest((ARRAY[['off', 'row', 'rownotify', 'floor', 'on'], ['on', 'off', 'row', 'rownotify', 'floor'],
                   ['floor', 'on', 'off', 'row', 'rownotify'], ['rownotify', 'floor', 'on', 'off', 'row'],
                   ['row', 'rownotify', 'floor', 'on', 'off']])[r % 5 + 1:r % 5 + 1])
         WITH ORDINALITY AS o(v, vi)
ORDER BY r, wi, vi
\gexec
