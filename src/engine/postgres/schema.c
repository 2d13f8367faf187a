/*
 * schema.c — connections of the PostgreSQL engine (session settings: search_path and the
 * timeouts that bound every statement) and the versioned schema migrations, run under a
 * transaction-scoped advisory lock so that several instances may start at once.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/postgres/pg.h"

/* hf_acquire as schema 9 made it, COUNT_RESOURCES (a statement setting cnt to the number of
 * resources) aside: schema 9 counted the rows, schema 10 sums live_resources' slots. */
#define ACQUIRE_V9(COUNT_RESOURCES) \
	"CREATE OR REPLACE FUNCTION hf_acquire(p_names text[], p_units bigint[], p_caps bigint[], " \
	"  p_any boolean, p_skip boolean, p_wait boolean, p_mode int, p_mode_name text, " \
	"  p_owner text, p_ttl bigint, p_id text, p_token text, p_max_holds bigint, " \
	"  p_max_resources bigint) " \
	"  RETURNS TABLE (o_verdict text, o_at bigint, o_name text, o_units bigint, o_fence bigint, " \
	"  o_n bigint) LANGUAGE plpgsql AS $f$ " \
	" DECLARE t bigint := now_ms(); k int := cardinality(p_names); r record; " \
	"  ex boolean[]; cap bigint[]; held bigint[]; nex bigint[]; q boolean[]; u bigint[]; " \
	"  fit boolean[]; i int; a int := 0; b int := -1; cnt bigint; mk int := 0; uu bigint; " \
	"  parts text := ''; fen bigint; live bigint; busy boolean[]; hk int; due boolean; " \
	"  fr text[]; " \
	" BEGIN " \
	"  SELECT coalesce((SELECT min(expires_at) FROM holds WHERE state = 0) <= t, false) " \
	"   OR coalesce((SELECT min(lease_until) FROM waiters) < t, false), " \
	"   (SELECT coalesce(sum(n), 0) FROM live_holds) INTO due, live; " \
	"  IF due THEN " \
	"   RETURN QUERY SELECT 'slow', t, NULL::text, 0::bigint, 0::bigint, 0::bigint; RETURN; " \
	"  END IF; " \
	"  ex := array_fill(false, ARRAY[k]); cap := array_fill(0::bigint, ARRAY[k]); " \
	"  held := cap; nex := cap; u := cap; q := ex; fit := ex; busy := ex; " \
	"  IF k = 1 AND NOT p_skip THEN " \
	"   SELECT x.capacity AS c, x.held AS h, x.n_exclusive AS e, EXISTS (SELECT 1 FROM " \
	"    waiter_claims w WHERE w.resource = x.name) AS w INTO r FROM resources x " \
	"    WHERE x.name = p_names[1] FOR UPDATE; " \
	"   IF NOT FOUND THEN " \
	"    PERFORM pg_advisory_xact_lock(729, hashtext(p_names[1])); " \
	"    SELECT x.capacity AS c, x.held AS h, x.n_exclusive AS e, EXISTS (SELECT 1 FROM " \
	"     waiter_claims w WHERE w.resource = x.name) AS w INTO r FROM resources x " \
	"     WHERE x.name = p_names[1] FOR UPDATE; " \
	"   END IF; " \
	"   IF FOUND THEN ex[1] := true; cap[1] := r.c; held[1] := r.h; nex[1] := r.e; " \
	"    q[1] := r.w; END IF; " \
	"  ELSE " \
	"   FOR hk IN SELECT DISTINCT hashtext(z.n) FROM unnest(p_names) z(n) ORDER BY 1 LOOP " \
	"    IF NOT p_skip THEN PERFORM pg_advisory_xact_lock(729, hk); " \
	"    ELSIF NOT pg_try_advisory_xact_lock(729, hk) THEN " \
	"     FOR i IN 1..k LOOP IF hashtext(p_names[i]) = hk THEN busy[i] := true; END IF; " \
	"     END LOOP; " \
	"    END IF; " \
	"   END LOOP; " \
	"   fr := ARRAY(SELECT p_names[j] FROM generate_series(1, k) j WHERE NOT busy[j]); " \
	"   IF p_skip THEN " \
	"    FOR r IN SELECT x.name, coalesce(l.capacity, x.capacity) AS c, " \
	"     l.held AS h, l.n_exclusive AS e, EXISTS (SELECT 1 FROM waiter_claims w WHERE " \
	"     w.resource = x.name) OR l.name IS NULL AS w FROM resources x LEFT JOIN LATERAL " \
	"     (SELECT y.name, y.capacity, y.held, y.n_exclusive FROM resources y WHERE " \
	"     y.name = x.name FOR UPDATE SKIP LOCKED) l ON true WHERE x.name = ANY(fr) " \
	"     ORDER BY x.name LOOP " \
	"     i := array_position(p_names, r.name::text); " \
	"     ex[i] := true; cap[i] := r.c; held[i] := r.h; nex[i] := r.e; q[i] := r.w; " \
	"    END LOOP; " \
	"   ELSE " \
	"    FOR r IN SELECT x.name, x.capacity AS c, x.held AS h, x.n_exclusive AS e, " \
	"     EXISTS (SELECT 1 FROM waiter_claims w WHERE w.resource = x.name) AS w " \
	"     FROM resources x WHERE x.name = ANY(p_names) ORDER BY x.name FOR UPDATE LOOP " \
	"     i := array_position(p_names, r.name::text); " \
	"     ex[i] := true; cap[i] := r.c; held[i] := r.h; nex[i] := r.e; q[i] := r.w; " \
	"    END LOOP; " \
	"   END IF; " \
	"  END IF; " \
	"  FOR i IN 1..k LOOP CONTINUE WHEN busy[i]; " \
	"   IF NOT ex[i] AND p_caps[i] = 0 THEN RETURN QUERY SELECT 'no_resource', t, p_names[i], " \
	"    0::bigint, 0::bigint, 0::bigint; RETURN; END IF; " \
	"   IF ex[i] AND p_caps[i] > 0 AND p_caps[i] <> cap[i] THEN RETURN QUERY SELECT " \
	"    'cap_mismatch', t, p_names[i], p_caps[i], 0::bigint, cap[i]; RETURN; END IF; " \
	"   IF NOT ex[i] THEN cap[i] := p_caps[i]; mk := mk + 1; END IF; " \
	"   u[i] := CASE p_mode WHEN 0 THEN p_units[i] WHEN 1 THEN 1 ELSE 0 END; " \
	"   IF u[i] > cap[i] THEN RETURN QUERY SELECT 'capacity', t, p_names[i], u[i], 0::bigint, " \
	"    cap[i]; RETURN; END IF; " \
	"  END LOOP; " \
	"  IF mk > 0 THEN " COUNT_RESOURCES " " \
	"   IF cnt + mk > p_max_resources THEN RETURN QUERY SELECT 'limit_resources', t, " \
	"    NULL::text, 0::bigint, 0::bigint, cnt; RETURN; END IF; " \
	"  END IF; " \
	"  FOR i IN 1..k LOOP " \
	"   fit[i] := NOT busy[i] AND (NOT ex[i] OR (NOT q[i] AND CASE WHEN u[i] = 0 THEN held[i] = 0 " \
	"    ELSE nex[i] = 0 AND cap[i] - held[i] >= u[i] END)); " \
	"   IF p_any AND fit[i] AND b < 0 THEN a := i; b := i; END IF; " \
	"  END LOOP; " \
	"  IF NOT p_any AND k > 0 AND NOT (false = ANY(fit)) THEN a := 1; b := k; END IF; " \
	"  IF b < 0 THEN " \
	"   IF p_wait OR EXISTS (SELECT 1 FROM hold_parts p JOIN holds h ON h.id = p.hold_id " \
	"    WHERE p.resource = ANY(SELECT p_names[j] FROM generate_series(1, k) j WHERE ex[j] " \
	"    AND NOT fit[j]) AND h.state = 0 AND h.expires_at <= t) THEN " \
	"    RETURN QUERY SELECT 'slow', t, NULL::text, 0::bigint, 0::bigint, 0::bigint; RETURN; " \
	"   END IF; " \
	"   RETURN QUERY SELECT 'unavailable', t, NULL::text, 0::bigint, 0::bigint, k::bigint; " \
	"   RETURN; " \
	"  END IF; " \
	"  IF live >= p_max_holds THEN RETURN QUERY " \
	"   SELECT 'limit_holds', t, NULL::text, 0::bigint, 0::bigint, 0::bigint; RETURN; END IF; " \
	"  IF a = b THEN " \
	"   uu := CASE WHEN u[a] = 0 THEN cap[a] ELSE u[a] END; fen := nextval('fences'); " \
	"   parts := '{\"expires_at_ms\":' || (t + p_ttl) || ',\"id\":' || to_json(p_id)::text " \
	"    || ',\"mode\":' || to_json(p_mode_name)::text || ',\"owner\":' " \
	"    || to_json(p_owner)::text || ',\"resources\":[{\"fence\":' || fen || ',\"name\":' " \
	"    || to_json(p_names[a])::text || ',\"units\":' || uu || '}]}'; " \
	"   WITH hh AS (INSERT INTO holds (id, token, owner, state, mode, created_at, expires_at, " \
	"    ended_at) VALUES (p_id, p_token, p_owner, 0, p_mode, t, t + p_ttl, 0)), " \
	"   rx AS (UPDATE resources x SET held = x.held + uu, holds = x.holds + 1, " \
	"    n_exclusive = x.n_exclusive + (p_mode = 2)::int WHERE x.name = p_names[a] AND ex[a]), " \
	"   ry AS (INSERT INTO resources (name, capacity, version, declared, held, holds, " \
	"    n_exclusive) SELECT p_names[a], cap[a], 0, false, uu, 1, (p_mode = 2)::int " \
	"    WHERE NOT ex[a]), " \
	"   hp AS (INSERT INTO hold_parts (hold_id, idx, resource, units, fence) " \
	"    VALUES (p_id, 0, p_names[a], uu, fen)), " \
	"   lv AS (UPDATE live_holds SET n = n + 1 WHERE slot = pg_backend_pid() % 64), " \
	"   rv AS (UPDATE event_revisions SET revision = revision + 1 WHERE resource = p_names[a] " \
	"    RETURNING revision) " \
	"   INSERT INTO events (at_ms, type, resource, hold_id, data, revision) " \
	"    SELECT t, 'hold.granted', p_names[a], p_id, parts, revision FROM rv; " \
	"   GET DIAGNOSTICS cnt = ROW_COUNT; " \
	"   IF cnt = 0 THEN PERFORM hf_event(t, 'hold.granted', p_id, p_names[a:a], parts); END IF; " \
	"   o_verdict := 'granted'; o_at := t; o_name := p_names[a]; o_units := uu; " \
	"   o_fence := fen; o_n := 0; RETURN NEXT; RETURN; " \
	"  END IF; " \
	"  INSERT INTO holds (id, token, owner, state, mode, created_at, expires_at, ended_at) " \
	"   VALUES (p_id, p_token, p_owner, 0, p_mode, t, t + p_ttl, 0); " \
	"  FOR i IN a..b LOOP " \
	"   uu := CASE WHEN u[i] = 0 THEN cap[i] ELSE u[i] END; " \
	"   IF ex[i] THEN " \
	"    UPDATE resources x SET held = x.held + uu, holds = x.holds + 1, " \
	"     n_exclusive = x.n_exclusive + (p_mode = 2)::int WHERE x.name = p_names[i]; " \
	"   ELSE " \
	"    INSERT INTO resources (name, capacity, version, declared, held, holds, n_exclusive) " \
	"     VALUES (p_names[i], cap[i], 0, false, uu, 1, (p_mode = 2)::int); " \
	"   END IF; " \
	"   INSERT INTO hold_parts (hold_id, idx, resource, units, fence) " \
	"    VALUES (p_id, i - a, p_names[i], uu, nextval('fences')) RETURNING fence INTO fen; " \
	"   parts := parts || CASE WHEN i > a THEN ',' ELSE '' END || '{\"fence\":' || fen " \
	"    || ',\"name\":' || to_json(p_names[i])::text || ',\"units\":' || uu || '}'; " \
	"   o_verdict := 'granted'; o_at := t; o_name := p_names[i]; o_units := uu; " \
	"   o_fence := fen; o_n := 0; RETURN NEXT; " \
	"  END LOOP; " \
	"  UPDATE live_holds SET n = n + 1 WHERE slot = pg_backend_pid() % 64; " \
	"  parts := '{\"expires_at_ms\":' || (t + p_ttl) || ',\"id\":' || to_json(p_id)::text " \
	"   || ',\"mode\":' || to_json(p_mode_name)::text || ',\"owner\":' || to_json(p_owner)::text " \
	"   || ',\"resources\":[' || parts || ']}'; " \
	"  PERFORM hf_event(t, 'hold.granted', p_id, p_names[a:b], parts); " \
	" END $f$; "

/* Each migration takes the schema from version i to i + 1. Names are unqualified: the
 * migration runs with search_path set to the engine's schema. Names are COLLATE "C" so that
 * ORDER BY name is the bytewise order the semantics fix for multi-resource holds. */
static const char *const migrations[] = {
	/* 0 -> 1 */
	"CREATE FUNCTION now_ms() RETURNS bigint LANGUAGE sql VOLATILE AS "
	"  $$ SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint $$;"
	/* One row: the gap-free event counter (a sequence would leave gaps on rollback) and the
	 * live hold count. Locking it serialised every change, up to version 2. */
	"CREATE TABLE counter (id int PRIMARY KEY CHECK (id = 1), last_seq bigint NOT NULL,"
	"  live_holds bigint NOT NULL);"
	"INSERT INTO counter VALUES (1, 0, 0);"
	"CREATE SEQUENCE fences;"
	"CREATE SEQUENCE tickets;"
	"CREATE TABLE resources (name text COLLATE \"C\" PRIMARY KEY, capacity bigint NOT NULL,"
	"  meta text, version bigint NOT NULL, declared boolean NOT NULL,"
	"  held bigint NOT NULL DEFAULT 0, holds bigint NOT NULL DEFAULT 0,"
	"  n_exclusive bigint NOT NULL DEFAULT 0);"
	"CREATE TABLE holds (id text PRIMARY KEY, token text NOT NULL, owner text NOT NULL,"
	"  state int NOT NULL, mode int NOT NULL, created_at bigint NOT NULL,"
	"  expires_at bigint NOT NULL, ended_at bigint NOT NULL);"
	"CREATE INDEX holds_expiry ON holds (expires_at) WHERE state = 0;"
	"CREATE INDEX holds_ended ON holds (ended_at) WHERE state >= 2;"
	"CREATE INDEX holds_owner ON holds (owner);"
	"CREATE TABLE hold_parts (hold_id text NOT NULL REFERENCES holds ON DELETE CASCADE,"
	"  idx int NOT NULL, resource text COLLATE \"C\" NOT NULL, units bigint NOT NULL,"
	"  fence bigint NOT NULL, PRIMARY KEY (hold_id, idx));"
	"CREATE INDEX hold_parts_resource ON hold_parts (resource);"
	"CREATE TABLE waiters (ticket bigint PRIMARY KEY, instance text NOT NULL,"
	"  any_of boolean NOT NULL, lease_until bigint NOT NULL, failed int NOT NULL DEFAULT 0);"
	"CREATE INDEX waiters_instance ON waiters (instance);"
	"CREATE INDEX waiters_lease ON waiters (lease_until);"
	"CREATE TABLE waiter_claims (ticket bigint NOT NULL REFERENCES waiters ON DELETE CASCADE,"
	"  idx int NOT NULL, resource text COLLATE \"C\" NOT NULL, units bigint NOT NULL,"
	"  PRIMARY KEY (ticket, idx));"
	"CREATE INDEX waiter_claims_resource ON waiter_claims (resource, ticket);"
	"CREATE TABLE idems (key text PRIMARY KEY, fingerprint text NOT NULL,"
	"  created_at bigint NOT NULL, hold_id text,"
	"  ticket bigint REFERENCES waiters ON DELETE CASCADE);"
	"CREATE INDEX idems_created ON idems (created_at);"
	"CREATE TABLE events (seq bigint PRIMARY KEY, at_ms bigint NOT NULL, type text NOT NULL,"
	"  resource text, hold_id text, data text NOT NULL);",
	/* 1 -> 2: no lock that every change takes. Events are written without a seq, by id (a
	 * sequence: insertion order); a reader first numbers the committed ones still without a
	 * seq, in id order, under the one event_head row (sequence_events): seq stays gap-free,
	 * in the order events became visible, and a reader following after=seq never misses one
	 * nor sees one appear behind its cursor (an uncommitted event is invisible to the
	 * numbering, and gets a seq above every one given before it). Writers never wait for
	 * it. The live hold count is spread over 64 slots, one per backend (pid % 64), summed
	 * for the max_holds check. */
	"CREATE SEQUENCE event_ids;"
	"ALTER TABLE events DROP CONSTRAINT events_pkey, ALTER COLUMN seq DROP NOT NULL,"
	"  ADD COLUMN id bigint;"
	"UPDATE events SET id = seq;"
	"SELECT setval('event_ids', coalesce(max(id), 0) + 1, false) FROM events;"
	"ALTER TABLE events ALTER COLUMN id SET DEFAULT nextval('event_ids'),"
	"  ALTER COLUMN id SET NOT NULL, ADD PRIMARY KEY (id);"
	"CREATE UNIQUE INDEX events_seq ON events (seq);"
	"CREATE INDEX events_unsequenced ON events (id) WHERE seq IS NULL;"
	"CREATE TABLE event_head (id int PRIMARY KEY CHECK (id = 1), last_seq bigint NOT NULL);"
	"INSERT INTO event_head SELECT 1, last_seq FROM counter;"
	"CREATE TABLE live_holds (slot int PRIMARY KEY, n bigint NOT NULL);"
	"INSERT INTO live_holds SELECT s, CASE WHEN s = 0 THEN (SELECT live_holds FROM counter)"
	"  ELSE 0 END FROM generate_series(0, 63) s;"
	"DROP TABLE counter;"
	/* Numbers the committed events without a seq (at most 10000 a call), returns the last
	 * seq given. Concurrent callers queue on event_head; the second one's statements see the
	 * first one's numbers (READ COMMITTED: a snapshot per statement). */
	"CREATE FUNCTION sequence_events() RETURNS bigint LANGUAGE plpgsql"
	"  SET search_path FROM CURRENT AS $$"
	" DECLARE last bigint; n bigint;"
	" BEGIN"
	"  IF NOT EXISTS (SELECT 1 FROM events WHERE seq IS NULL) THEN"
	"   RETURN (SELECT last_seq FROM event_head WHERE id = 1);"
	"  END IF;"
	"  SELECT last_seq INTO last FROM event_head WHERE id = 1 FOR UPDATE;"
	"  UPDATE events e SET seq = last + t.k FROM (SELECT id, row_number() OVER (ORDER BY id) k"
	"   FROM events WHERE seq IS NULL ORDER BY id LIMIT 10000) t WHERE e.id = t.id;"
	"  GET DIAGNOSTICS n = ROW_COUNT;"
	"  UPDATE event_head SET last_seq = last + n WHERE id = 1;"
	"  RETURN last + n;"
	" END $$;",
	/* 2 -> 3: per-resource event revisions. event_revisions holds each resource's last
	 * revision (it outlives implicit resources); a change advances it with the INSERT of its
	 * event (ops.c, insert_event). Old events get the revisions they would have had, numbered
	 * in their order (seq, then id for the ones not numbered yet): a hold event touches the
	 * parts its data lists; hold.extended and hold.confirmed, whose data does not list them,
	 * the parts of their hold's hold.granted. ALTER TABLE locks events for the transaction:
	 * no writer adds one meanwhile. */
	"ALTER TABLE events ADD COLUMN revision bigint, ADD COLUMN revisions text;"
	"CREATE TABLE event_revisions (resource text COLLATE \"C\" PRIMARY KEY,"
	"  revision bigint NOT NULL);"
	"CREATE TEMP TABLE touch ON COMMIT DROP AS SELECT e.id, e.seq, p.i, p.v ->> 'name' AS name"
	"  FROM events e CROSS JOIN LATERAL jsonb_array_elements(CASE WHEN"
	"  jsonb_typeof(e.data::jsonb -> 'resources') = 'array' THEN e.data::jsonb -> 'resources'"
	"  ELSE '[]'::jsonb END) WITH ORDINALITY p(v, i) WHERE e.hold_id IS NOT NULL;"
	"INSERT INTO touch SELECT e.id, e.seq, t.i, t.name FROM events e"
	"  JOIN events g ON g.hold_id = e.hold_id AND g.type = 'hold.granted'"
	"  JOIN touch t ON t.id = g.id"
	"  WHERE e.hold_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM touch x WHERE x.id = e.id);"
	"INSERT INTO touch SELECT e.id, e.seq, 1, e.resource FROM events e"
	"  WHERE e.resource IS NOT NULL AND NOT EXISTS (SELECT 1 FROM touch x WHERE x.id = e.id);"
	"CREATE TEMP TABLE numbered ON COMMIT DROP AS SELECT id, i, name, row_number() OVER"
	"  (PARTITION BY name ORDER BY seq NULLS LAST, id) AS revision FROM touch;"
	"UPDATE events e SET revision = n.revision FROM numbered n"
	"  WHERE n.id = e.id AND n.name = e.resource;"
	"UPDATE events e SET revisions = a.list FROM (SELECT id,"
	"  json_object_agg(name, revision ORDER BY i)::text AS list FROM numbered GROUP BY id"
	"  HAVING count(*) > 1) a WHERE a.id = e.id;"
	"INSERT INTO event_revisions SELECT name, max(revision) FROM numbered GROUP BY name;",
	/* 3 -> 4: a waiter row says who waits and since when, for GET .../waiters (the
	 * dashboard's queue). Rows parked by an older build show an empty owner and 0 times. */
	"ALTER TABLE waiters ADD COLUMN owner text NOT NULL DEFAULT '',"
	"  ADD COLUMN mode int NOT NULL DEFAULT 0, ADD COLUMN since_ms bigint NOT NULL DEFAULT 0,"
	"  ADD COLUMN deadline_ms bigint NOT NULL DEFAULT 0;",
	/* 4 -> 5: sagas (sagas.c). A saga's row text (body) is its GET answer; owner and
	 * lease_until say which instance runs it and until when, unless renewed. */
	"CREATE TABLE saga_types (name text COLLATE \"C\" PRIMARY KEY, version bigint NOT NULL,"
	"  body text NOT NULL);"
	"CREATE TABLE sagas (id text COLLATE \"C\" PRIMARY KEY, type text NOT NULL,"
	"  state text NOT NULL, version bigint NOT NULL, idem_key text UNIQUE, body text NOT NULL,"
	"  created_at bigint NOT NULL, owner text NOT NULL, lease_until bigint NOT NULL);"
	"CREATE INDEX sagas_state ON sagas (state, id);"
	"CREATE INDEX sagas_owner ON sagas (owner) WHERE state IN ('running', 'compensating');",
	/* 5 -> 6: each common change as one function call (calls.c), prepared once per
	 * connection: the acquire that grants or refuses at once, and release / extend / confirm.
	 * They do what ops.c's transactions do, in the same lock order (a hold's row, then its
	 * resources' rows in name order, the existing ones before the missing ones' advisory
	 * locks; revision counters last, in name order), and answer 'slow' (having written
	 * nothing) whenever ops.c's fuller path is needed: leases or waiter rows due (the sweep
	 * runs in a transaction of its own), a park, a lease ended under another change.
	 * A function answers rows the C side reads with PQgetvalue, one per hold part: no JSON or
	 * array to parse. Event data is the sorted compact JSON codec.c writes. */
	"CREATE FUNCTION hf_event(p_at bigint, p_type text, p_hold text, p_names text[],"
	"  p_data text) RETURNS void LANGUAGE plpgsql SET search_path FROM CURRENT AS $f$"
	" DECLARE s text[];"
	" BEGIN"
	"  SELECT array_agg(n ORDER BY n COLLATE \"C\") INTO s FROM unnest(p_names) n;"
	"  IF cardinality(s) > 1 THEN" /* the upsert below locks one row by itself */
	"   PERFORM 1 FROM event_revisions WHERE resource = ANY(s) ORDER BY resource FOR UPDATE;"
	"  END IF;"
	"  WITH r AS (INSERT INTO event_revisions AS v SELECT n, 1 FROM unnest(s) WITH ORDINALITY"
	"   u(n, i) ORDER BY i ON CONFLICT (resource) DO UPDATE SET revision = v.revision + 1"
	"   RETURNING resource, revision)"
	"  INSERT INTO events (at_ms, type, resource, hold_id, data, revision, revisions)"
	"   SELECT p_at, p_type, p_names[1], p_hold, p_data,"
	"   max(revision) FILTER (WHERE resource = p_names[1]),"
	"   CASE WHEN count(*) > 1 THEN json_object_agg(resource, revision)::text END FROM r;"
	" END $f$;"
	/* Lazy expiry is ops.c's: anything due sends the change there. PL/pgSQL, not SQL: its
	 * plan is kept per session (an SQL function with a SET clause is planned at every call).
	 * min() reads one entry of each index whatever the plan: a generic plan of
	 * "expires_at <= $1" may scan every hold. */
	"CREATE FUNCTION hf_due(p_now bigint) RETURNS boolean LANGUAGE plpgsql STABLE"
	"  SET search_path FROM CURRENT AS"
	"  $f$ BEGIN RETURN coalesce((SELECT min(expires_at) FROM holds WHERE state = 0) <= p_now,"
	"   false) OR coalesce((SELECT min(lease_until) FROM waiters) < p_now, false); END $f$;"
	/* An acquire: p_names etc. in weighing order (names for all-of, the caller's for any-of).
	 * o_verdict: granted (a row per part), slow, no_resource / cap_mismatch / capacity (o_name,
	 * o_n: the capacity), limit_resources (o_n: the count), limit_holds, unavailable. */
	"CREATE FUNCTION hf_acquire(p_names text[], p_units bigint[], p_caps bigint[],"
	"  p_any boolean, p_skip boolean, p_wait boolean, p_mode int, p_mode_name text,"
	"  p_owner text, p_ttl bigint, p_id text, p_token text, p_max_holds bigint,"
	"  p_max_resources bigint)"
	"  RETURNS TABLE (o_verdict text, o_at bigint, o_name text, o_units bigint, o_fence bigint,"
	"  o_n bigint) LANGUAGE plpgsql SET search_path FROM CURRENT AS $f$"
	" DECLARE t bigint := now_ms(); k int := cardinality(p_names); cur refcursor; r record;"
	"  ex boolean[]; cap bigint[]; held bigint[]; nex bigint[]; q boolean[]; u bigint[];"
	"  fit boolean[]; i int; a int := 0; b int := -1; cnt bigint; mk int := 0; uu bigint;"
	"  parts text := ''; fen bigint; live bigint;"
	" BEGIN"
	"  IF hf_due(t) THEN RETURN QUERY SELECT 'slow', t, NULL::text, 0::bigint, 0::bigint,"
	"   0::bigint; RETURN; END IF;"
	/* Read before any lock (as ops.c reads it): less done while a hot row is locked. */
	"  SELECT coalesce(sum(n), 0) INTO live FROM live_holds;"
	"  ex := array_fill(false, ARRAY[k]); cap := array_fill(0::bigint, ARRAY[k]);"
	"  held := cap; nex := cap; u := cap; q := ex; fit := ex;"
	/* An any-of that may not wait skips rows other changes have locked: taken, for now. */
	"  IF p_skip THEN OPEN cur FOR SELECT x.name, coalesce(l.capacity, x.capacity) AS c,"
	"   l.held AS h, l.n_exclusive AS e, EXISTS (SELECT 1 FROM waiter_claims w WHERE"
	"   w.resource = x.name) OR l.name IS NULL AS w FROM resources x LEFT JOIN LATERAL"
	"   (SELECT y.name, y.capacity, y.held, y.n_exclusive FROM resources y WHERE"
	"   y.name = x.name FOR UPDATE SKIP LOCKED) l ON true WHERE x.name = ANY(p_names)"
	"   ORDER BY x.name;"
	"  ELSE OPEN cur FOR SELECT x.name, x.capacity AS c, x.held AS h, x.n_exclusive AS e,"
	"   EXISTS (SELECT 1 FROM waiter_claims w WHERE w.resource = x.name) AS w"
	"   FROM resources x WHERE x.name = ANY(p_names) ORDER BY x.name FOR UPDATE;"
	"  END IF;"
	"  LOOP FETCH cur INTO r; EXIT WHEN NOT FOUND; i := array_position(p_names, r.name::text);"
	"   ex[i] := true; cap[i] := r.c; held[i] := r.h; nex[i] := r.e; q[i] := r.w; END LOOP;"
	"  CLOSE cur;"
	/* The missing ones, in name order, each under its name's advisory lock. */
	"  FOR i IN SELECT o FROM unnest(p_names) WITH ORDINALITY z(n, o) ORDER BY n COLLATE \"C\""
	"  LOOP CONTINUE WHEN ex[i];"
	"   PERFORM pg_advisory_xact_lock(729, hashtext(p_names[i]));"
	"   SELECT x.capacity AS c, x.held AS h, x.n_exclusive AS e, EXISTS (SELECT 1 FROM"
	"    waiter_claims w WHERE w.resource = x.name) AS w INTO r FROM resources x"
	"    WHERE x.name = p_names[i] FOR UPDATE;"
	"   IF FOUND THEN ex[i] := true; cap[i] := r.c; held[i] := r.h; nex[i] := r.e;"
	"    q[i] := r.w; END IF;"
	"  END LOOP;"
	"  FOR i IN 1..k LOOP"
	"   IF NOT ex[i] AND p_caps[i] = 0 THEN RETURN QUERY SELECT 'no_resource', t, p_names[i],"
	"    0::bigint, 0::bigint, 0::bigint; RETURN; END IF;"
	"   IF ex[i] AND p_caps[i] > 0 AND p_caps[i] <> cap[i] THEN RETURN QUERY SELECT"
	"    'cap_mismatch', t, p_names[i], p_caps[i], 0::bigint, cap[i]; RETURN; END IF;"
	"   IF NOT ex[i] THEN cap[i] := p_caps[i]; mk := mk + 1; END IF;"
	"   u[i] := CASE p_mode WHEN 0 THEN p_units[i] WHEN 1 THEN 1 ELSE 0 END;"
	"   IF u[i] > cap[i] THEN RETURN QUERY SELECT 'capacity', t, p_names[i], u[i], 0::bigint,"
	"    cap[i]; RETURN; END IF;"
	"  END LOOP;"
	"  IF mk > 0 THEN SELECT count(*) INTO cnt FROM resources;"
	"   IF cnt + mk > p_max_resources THEN RETURN QUERY SELECT 'limit_resources', t,"
	"    NULL::text, 0::bigint, 0::bigint, cnt; RETURN; END IF;"
	"  END IF;"
	/* fits() and hf__claims_grantable of ops.c / rules.c. */
	"  FOR i IN 1..k LOOP"
	"   fit[i] := NOT ex[i] OR (NOT q[i] AND CASE WHEN u[i] = 0 THEN held[i] = 0"
	"    ELSE nex[i] = 0 AND cap[i] - held[i] >= u[i] END);"
	"   IF p_any AND fit[i] AND b < 0 THEN a := i; b := i; END IF;"
	"  END LOOP;"
	"  IF NOT p_any AND k > 0 AND NOT (false = ANY(fit)) THEN a := 1; b := k; END IF;"
	"  IF b < 0 THEN"
	"   IF p_wait OR EXISTS (SELECT 1 FROM hold_parts p JOIN holds h ON h.id = p.hold_id"
	"    WHERE p.resource = ANY(SELECT p_names[j] FROM generate_series(1, k) j WHERE ex[j]"
	"    AND NOT fit[j]) AND h.state = 0 AND h.expires_at <= t) THEN"
	"    RETURN QUERY SELECT 'slow', t, NULL::text, 0::bigint, 0::bigint, 0::bigint; RETURN;"
	"   END IF;"
	"   RETURN QUERY SELECT 'unavailable', t, NULL::text, 0::bigint, 0::bigint, k::bigint;"
	"   RETURN;"
	"  END IF;"
	"  IF live >= p_max_holds THEN RETURN QUERY"
	"   SELECT 'limit_holds', t, NULL::text, 0::bigint, 0::bigint, 0::bigint; RETURN; END IF;"
	"  INSERT INTO holds (id, token, owner, state, mode, created_at, expires_at, ended_at)"
	"   VALUES (p_id, p_token, p_owner, 0, p_mode, t, t + p_ttl, 0);"
	"  FOR i IN a..b LOOP"
	"   uu := CASE WHEN u[i] = 0 THEN cap[i] ELSE u[i] END;"
	"   INSERT INTO resources (name, capacity, version, declared, held, holds, n_exclusive)"
	"    VALUES (p_names[i], cap[i], 0, false, uu, 1, (p_mode = 2)::int) ON CONFLICT (name)"
	"    DO UPDATE SET held = resources.held + EXCLUDED.held, holds = resources.holds + 1,"
	"    n_exclusive = resources.n_exclusive + EXCLUDED.n_exclusive;"
	"   INSERT INTO hold_parts (hold_id, idx, resource, units, fence)"
	"    VALUES (p_id, i - a, p_names[i], uu, nextval('fences')) RETURNING fence INTO fen;"
	"   parts := parts || CASE WHEN i > a THEN ',' ELSE '' END || '{\"fence\":' || fen"
	"    || ',\"name\":' || to_json(p_names[i])::text || ',\"units\":' || uu || '}';"
	"   o_verdict := 'granted'; o_at := t; o_name := p_names[i]; o_units := uu;"
	"   o_fence := fen; o_n := 0; RETURN NEXT;"
	"  END LOOP;"
	"  UPDATE live_holds SET n = n + 1 WHERE slot = pg_backend_pid() % 64;"
	"  PERFORM hf_event(t, 'hold.granted', p_id, p_names[a:b], '{\"expires_at_ms\":'"
	"   || (t + p_ttl) || ',\"id\":' || to_json(p_id)::text || ',\"mode\":'"
	"   || to_json(p_mode_name)::text || ',\"owner\":' || to_json(p_owner)::text"
	"   || ',\"resources\":[' || parts || ']}');"
	" END $f$;"
	/* A release, extend or confirm (p_op 'release', 'extend', 'confirm') of a hold whose
	 * token is p_token, or (p_by 'operator') any hold. o_verdict: done, no_hold, refused
	 * (token or state: the C side's rule names the error), slow; with done and refused a row
	 * per part, the hold's columns on each. */
	"CREATE FUNCTION hf_hold_change(p_op text, p_id text, p_token text, p_by text,"
	"  p_ttl bigint, p_retention bigint)"
	"  RETURNS TABLE (o_verdict text, o_at bigint, o_token text, o_owner text, o_state int,"
	"  o_mode int, o_created bigint, o_expires bigint, o_ended bigint, o_name text,"
	"  o_units bigint, o_fence bigint) LANGUAGE plpgsql SET search_path FROM CURRENT AS $f$"
	" DECLARE t bigint := now_ms(); h holds; p record; idle boolean; waited boolean;"
	"  names text[]; data text := '';"
	" BEGIN"
	"  IF hf_due(t) THEN RETURN QUERY SELECT 'slow', t, NULL::text, NULL::text, 0, 0,"
	"   0::bigint, 0::bigint, 0::bigint, NULL::text, 0::bigint, 0::bigint; RETURN; END IF;"
	"  SELECT * INTO h FROM holds WHERE id = p_id AND (state < 2 OR ended_at > t - p_retention)"
	"   FOR UPDATE;"
	"  IF NOT FOUND THEN RETURN QUERY SELECT 'no_hold', t, NULL::text, NULL::text, 0, 0,"
	"   0::bigint, 0::bigint, 0::bigint, NULL::text, 0::bigint, 0::bigint; RETURN; END IF;"
	"  o_verdict := 'done';"
	"  IF (p_by IS NULL AND h.token IS DISTINCT FROM p_token) OR h.state >= 2 THEN"
	"   o_verdict := 'refused';"
	"  ELSIF h.state = 0 AND h.expires_at <= t THEN"
	"   RETURN QUERY SELECT 'slow', t, NULL::text, NULL::text, 0, 0,"
	"   0::bigint, 0::bigint, 0::bigint, NULL::text, 0::bigint, 0::bigint; RETURN;"
	"  ELSIF p_op = 'release' THEN"
	"   FOR p IN SELECT resource, units FROM hold_parts WHERE hold_id = p_id ORDER BY idx LOOP"
	"    UPDATE resources SET held = held - p.units, holds = holds - 1,"
	"     n_exclusive = n_exclusive - (h.mode = 2)::int WHERE name = p.resource"
	"     RETURNING NOT declared AND holds = 0, EXISTS (SELECT 1 FROM waiter_claims w"
	"     WHERE w.resource = p.resource) INTO idle, waited;"
	"    IF idle AND NOT waited THEN DELETE FROM resources WHERE name = p.resource; END IF;"
	"    data := data || CASE WHEN data = '' THEN '' ELSE ',' END || '{\"name\":'"
	"     || to_json(p.resource)::text || ',\"units\":' || p.units || '}';"
	"   END LOOP;"
	"   UPDATE holds SET state = 2, ended_at = t WHERE id = p_id RETURNING * INTO h;"
	"   UPDATE live_holds SET n = n - 1 WHERE slot = pg_backend_pid() % 64;"
	"   data := '{' || CASE WHEN p_by IS NULL THEN '' ELSE '\"by\":' || to_json(p_by)::text"
	"    || ',' END || '\"id\":' || to_json(h.id)::text || ',\"owner\":'"
	"    || to_json(h.owner)::text || ',\"resources\":[' || data || ']}';"
	"  ELSIF h.state = 0 AND p_op = 'extend' THEN"
	"   UPDATE holds SET expires_at = t + p_ttl WHERE id = p_id RETURNING * INTO h;"
	"   data := '{\"expires_at_ms\":' || h.expires_at || ',\"id\":' || to_json(h.id)::text"
	"    || '}';"
	"  ELSIF h.state = 0 AND p_op = 'confirm' THEN"
	"   UPDATE holds SET state = 1, expires_at = 0 WHERE id = p_id RETURNING * INTO h;"
	"   data := '{\"id\":' || to_json(h.id)::text || ',\"owner\":' || to_json(h.owner)::text"
	"    || '}';"
	"  END IF;"
	"  IF data <> '' THEN"
	"   SELECT array_agg(resource ORDER BY idx) INTO names FROM hold_parts WHERE hold_id = p_id;"
	"   PERFORM hf_event(t, CASE p_op WHEN 'release' THEN 'hold.released' WHEN 'extend' THEN"
	"    'hold.extended' ELSE 'hold.confirmed' END, p_id, names, data);"
	"  END IF;"
	"  RETURN QUERY SELECT o_verdict, t, h.token, h.owner, h.state, h.mode, h.created_at,"
	"   h.expires_at, h.ended_at, x.resource::text, x.units, x.fence FROM hold_parts x"
	"   WHERE x.hold_id = p_id ORDER BY x.idx;"
	" END $f$;",
	/* 6 -> 7: the same two functions, doing less per call (measured: backend CPU per acquire +
	 * release 2.15 -> 1.36 ms, docs/operations.md "Schema version 7"). No SET search_path
	 * clause: the engine's connections set it (schema.c, connect), and a SET clause makes
	 * every call save and restore it and re-check every nested plan against it. The due check
	 * and, for a single resource, the event (its revision counter and row) are statements of
	 * the function itself instead of calls of hf_due / hf_event; a hold change reads its parts
	 * once; a granted part that exists is an UPDATE (its row is locked), a missing one an
	 * INSERT (under its name's advisory lock). One resource is locked by "name = $1", not
	 * "= ANY($1)": the plan cache kept planning the latter at every call (a generic plan's
	 * estimate of ten names never beat a custom plan's one). Same lock order, same answers.
	 * An acquire that may not wait (p_skip: any-of, NOWAIT) never blocks on a name another
	 * change is creating: its advisory lock is tried, the row locked SKIP LOCKED, and a busy
	 * name is passed over like a locked row. Blocking there deadlocked against a change that
	 * held a row this one had locked SKIP LOCKED before (its snapshot saw the name missing):
	 * apps_rides_concurrent_postgres, 16 any-of assigns at once over 8 workers. */
	"ALTER FUNCTION hf_event(bigint, text, text, text[], text) RESET ALL; "
	"DROP FUNCTION hf_due(bigint); "
	"CREATE OR REPLACE FUNCTION hf_acquire(p_names text[], p_units bigint[], p_caps bigint[], "
	"  p_any boolean, p_skip boolean, p_wait boolean, p_mode int, p_mode_name text, "
	"  p_owner text, p_ttl bigint, p_id text, p_token text, p_max_holds bigint, "
	"  p_max_resources bigint) "
	"  RETURNS TABLE (o_verdict text, o_at bigint, o_name text, o_units bigint, o_fence bigint, "
	"  o_n bigint) LANGUAGE plpgsql AS $f$ "
	" DECLARE t bigint := now_ms(); k int := cardinality(p_names); r record; "
	"  ex boolean[]; cap bigint[]; held bigint[]; nex bigint[]; q boolean[]; u bigint[]; "
	"  fit boolean[]; i int; a int := 0; b int := -1; cnt bigint; mk int := 0; uu bigint; "
	"  parts text := ''; fen bigint; live bigint; rev bigint; busy boolean[]; got boolean; "
	" BEGIN "
	"  IF coalesce((SELECT min(expires_at) FROM holds WHERE state = 0) <= t, false) "
	"   OR coalesce((SELECT min(lease_until) FROM waiters) < t, false) THEN "
	"   RETURN QUERY SELECT 'slow', t, NULL::text, 0::bigint, 0::bigint, 0::bigint; RETURN; "
	"  END IF; "
	"  SELECT coalesce(sum(n), 0) INTO live FROM live_holds; "
	"  ex := array_fill(false, ARRAY[k]); cap := array_fill(0::bigint, ARRAY[k]); "
	"  held := cap; nex := cap; u := cap; q := ex; fit := ex; busy := ex; "
	"  IF p_skip THEN "
	"   FOR r IN SELECT x.name, coalesce(l.capacity, x.capacity) AS c, "
	"    l.held AS h, l.n_exclusive AS e, EXISTS (SELECT 1 FROM waiter_claims w WHERE "
	"    w.resource = x.name) OR l.name IS NULL AS w FROM resources x LEFT JOIN LATERAL "
	"    (SELECT y.name, y.capacity, y.held, y.n_exclusive FROM resources y WHERE "
	"    y.name = x.name FOR UPDATE SKIP LOCKED) l ON true WHERE x.name = ANY(p_names) "
	"    ORDER BY x.name LOOP "
	"    i := array_position(p_names, r.name::text); "
	"    ex[i] := true; cap[i] := r.c; held[i] := r.h; nex[i] := r.e; q[i] := r.w; "
	"   END LOOP; "
	"  ELSIF k = 1 THEN "
	"   SELECT x.capacity AS c, x.held AS h, x.n_exclusive AS e, EXISTS (SELECT 1 FROM "
	"    waiter_claims w WHERE w.resource = x.name) AS w INTO r FROM resources x "
	"    WHERE x.name = p_names[1] FOR UPDATE; "
	"   IF FOUND THEN ex[1] := true; cap[1] := r.c; held[1] := r.h; nex[1] := r.e; "
	"    q[1] := r.w; END IF; "
	"  ELSE "
	"   FOR r IN SELECT x.name, x.capacity AS c, x.held AS h, x.n_exclusive AS e, "
	"    EXISTS (SELECT 1 FROM waiter_claims w WHERE w.resource = x.name) AS w "
	"    FROM resources x WHERE x.name = ANY(p_names) ORDER BY x.name FOR UPDATE LOOP "
	"    i := array_position(p_names, r.name::text); "
	"    ex[i] := true; cap[i] := r.c; held[i] := r.h; nex[i] := r.e; q[i] := r.w; "
	"   END LOOP; "
	"  END IF; "
	"  IF false = ANY(ex) THEN "
	"   FOR i IN SELECT o FROM unnest(p_names) WITH ORDINALITY z(n, o) ORDER BY n COLLATE \"C\" "
	"   LOOP CONTINUE WHEN ex[i]; "
	"    IF p_skip THEN "
	"     IF NOT pg_try_advisory_xact_lock(729, hashtext(p_names[i])) THEN busy[i] := true; "
	"      CONTINUE; END IF; "
	"     SELECT x.capacity AS c, x.held AS h, x.n_exclusive AS e, EXISTS (SELECT 1 FROM "
	"      waiter_claims w WHERE w.resource = x.name) AS w INTO r FROM resources x "
	"      WHERE x.name = p_names[i] FOR UPDATE SKIP LOCKED; "
	"     got := FOUND; "
	"     IF NOT got AND EXISTS (SELECT 1 FROM resources y WHERE y.name = p_names[i]) THEN "
	"      busy[i] := true; CONTINUE; END IF; "
	"    ELSE "
	"     PERFORM pg_advisory_xact_lock(729, hashtext(p_names[i])); "
	"     SELECT x.capacity AS c, x.held AS h, x.n_exclusive AS e, EXISTS (SELECT 1 FROM "
	"      waiter_claims w WHERE w.resource = x.name) AS w INTO r FROM resources x "
	"      WHERE x.name = p_names[i] FOR UPDATE; "
	"     got := FOUND; "
	"    END IF; "
	"    IF got THEN ex[i] := true; cap[i] := r.c; held[i] := r.h; nex[i] := r.e; "
	"     q[i] := r.w; END IF; "
	"   END LOOP; "
	"  END IF; "
	"  FOR i IN 1..k LOOP CONTINUE WHEN busy[i]; "
	"   IF NOT ex[i] AND p_caps[i] = 0 THEN RETURN QUERY SELECT 'no_resource', t, p_names[i], "
	"    0::bigint, 0::bigint, 0::bigint; RETURN; END IF; "
	"   IF ex[i] AND p_caps[i] > 0 AND p_caps[i] <> cap[i] THEN RETURN QUERY SELECT "
	"    'cap_mismatch', t, p_names[i], p_caps[i], 0::bigint, cap[i]; RETURN; END IF; "
	"   IF NOT ex[i] THEN cap[i] := p_caps[i]; mk := mk + 1; END IF; "
	"   u[i] := CASE p_mode WHEN 0 THEN p_units[i] WHEN 1 THEN 1 ELSE 0 END; "
	"   IF u[i] > cap[i] THEN RETURN QUERY SELECT 'capacity', t, p_names[i], u[i], 0::bigint, "
	"    cap[i]; RETURN; END IF; "
	"  END LOOP; "
	"  IF mk > 0 THEN SELECT count(*) INTO cnt FROM resources; "
	"   IF cnt + mk > p_max_resources THEN RETURN QUERY SELECT 'limit_resources', t, "
	"    NULL::text, 0::bigint, 0::bigint, cnt; RETURN; END IF; "
	"  END IF; "
	"  FOR i IN 1..k LOOP "
	"   fit[i] := NOT busy[i] AND (NOT ex[i] OR (NOT q[i] AND CASE WHEN u[i] = 0 THEN held[i] = 0 "
	"    ELSE nex[i] = 0 AND cap[i] - held[i] >= u[i] END)); "
	"   IF p_any AND fit[i] AND b < 0 THEN a := i; b := i; END IF; "
	"  END LOOP; "
	"  IF NOT p_any AND k > 0 AND NOT (false = ANY(fit)) THEN a := 1; b := k; END IF; "
	"  IF b < 0 THEN "
	"   IF p_wait OR EXISTS (SELECT 1 FROM hold_parts p JOIN holds h ON h.id = p.hold_id "
	"    WHERE p.resource = ANY(SELECT p_names[j] FROM generate_series(1, k) j WHERE ex[j] "
	"    AND NOT fit[j]) AND h.state = 0 AND h.expires_at <= t) THEN "
	"    RETURN QUERY SELECT 'slow', t, NULL::text, 0::bigint, 0::bigint, 0::bigint; RETURN; "
	"   END IF; "
	"   RETURN QUERY SELECT 'unavailable', t, NULL::text, 0::bigint, 0::bigint, k::bigint; "
	"   RETURN; "
	"  END IF; "
	"  IF live >= p_max_holds THEN RETURN QUERY "
	"   SELECT 'limit_holds', t, NULL::text, 0::bigint, 0::bigint, 0::bigint; RETURN; END IF; "
	"  INSERT INTO holds (id, token, owner, state, mode, created_at, expires_at, ended_at) "
	"   VALUES (p_id, p_token, p_owner, 0, p_mode, t, t + p_ttl, 0); "
	"  FOR i IN a..b LOOP "
	"   uu := CASE WHEN u[i] = 0 THEN cap[i] ELSE u[i] END; "
	"   IF ex[i] THEN "
	"    UPDATE resources x SET held = x.held + uu, holds = x.holds + 1, "
	"     n_exclusive = x.n_exclusive + (p_mode = 2)::int WHERE x.name = p_names[i]; "
	"   ELSE "
	"    INSERT INTO resources (name, capacity, version, declared, held, holds, n_exclusive) "
	"     VALUES (p_names[i], cap[i], 0, false, uu, 1, (p_mode = 2)::int); "
	"   END IF; "
	"   INSERT INTO hold_parts (hold_id, idx, resource, units, fence) "
	"    VALUES (p_id, i - a, p_names[i], uu, nextval('fences')) RETURNING fence INTO fen; "
	"   parts := parts || CASE WHEN i > a THEN ',' ELSE '' END || '{\"fence\":' || fen "
	"    || ',\"name\":' || to_json(p_names[i])::text || ',\"units\":' || uu || '}'; "
	"   o_verdict := 'granted'; o_at := t; o_name := p_names[i]; o_units := uu; "
	"   o_fence := fen; o_n := 0; RETURN NEXT; "
	"  END LOOP; "
	"  UPDATE live_holds SET n = n + 1 WHERE slot = pg_backend_pid() % 64; "
	"  parts := '{\"expires_at_ms\":' || (t + p_ttl) || ',\"id\":' || to_json(p_id)::text "
	"   || ',\"mode\":' || to_json(p_mode_name)::text || ',\"owner\":' || to_json(p_owner)::text "
	"   || ',\"resources\":[' || parts || ']}'; "
	"  IF a = b THEN "
	"   INSERT INTO event_revisions AS v VALUES (p_names[a], 1) ON CONFLICT (resource) "
	"    DO UPDATE SET revision = v.revision + 1 RETURNING revision INTO rev; "
	"   INSERT INTO events (at_ms, type, resource, hold_id, data, revision) "
	"    VALUES (t, 'hold.granted', p_names[a], p_id, parts, rev); "
	"  ELSE "
	"   PERFORM hf_event(t, 'hold.granted', p_id, p_names[a:b], parts); "
	"  END IF; "
	" END $f$; "
	"CREATE OR REPLACE FUNCTION hf_hold_change(p_op text, p_id text, p_token text, p_by text, "
	"  p_ttl bigint, p_retention bigint) "
	"  RETURNS TABLE (o_verdict text, o_at bigint, o_token text, o_owner text, o_state int, "
	"  o_mode int, o_created bigint, o_expires bigint, o_ended bigint, o_name text, "
	"  o_units bigint, o_fence bigint) LANGUAGE plpgsql AS $f$ "
	" DECLARE t bigint := now_ms(); h holds; p record; idle boolean; waited boolean; "
	"  names text[] := '{}'; us bigint[] := '{}'; fs bigint[] := '{}'; data text := ''; "
	"  rev bigint; i int; "
	" BEGIN "
	"  IF coalesce((SELECT min(expires_at) FROM holds WHERE state = 0) <= t, false) "
	"   OR coalesce((SELECT min(lease_until) FROM waiters) < t, false) THEN "
	"   RETURN QUERY SELECT 'slow', t, NULL::text, NULL::text, 0, 0, "
	"   0::bigint, 0::bigint, 0::bigint, NULL::text, 0::bigint, 0::bigint; RETURN; END IF; "
	"  SELECT * INTO h FROM holds WHERE id = p_id AND (state < 2 OR ended_at > t - p_retention) "
	"   FOR UPDATE; "
	"  IF NOT FOUND THEN RETURN QUERY SELECT 'no_hold', t, NULL::text, NULL::text, 0, 0, "
	"   0::bigint, 0::bigint, 0::bigint, NULL::text, 0::bigint, 0::bigint; RETURN; END IF; "
	"  o_verdict := 'done'; "
	"  IF (p_by IS NULL AND h.token IS DISTINCT FROM p_token) OR h.state >= 2 THEN "
	"   o_verdict := 'refused'; "
	"  ELSIF h.state = 0 AND h.expires_at <= t THEN "
	"   RETURN QUERY SELECT 'slow', t, NULL::text, NULL::text, 0, 0, "
	"   0::bigint, 0::bigint, 0::bigint, NULL::text, 0::bigint, 0::bigint; RETURN; "
	"  END IF; "
	"  FOR p IN SELECT resource, units, fence FROM hold_parts WHERE hold_id = p_id ORDER BY idx LOOP "
	"   names := names || p.resource::text; us := us || p.units; fs := fs || p.fence; "
	"  END LOOP; "
	"  IF o_verdict = 'refused' THEN NULL; "
	"  ELSIF p_op = 'release' THEN "
	"   FOR i IN 1..cardinality(names) LOOP "
	"    UPDATE resources SET held = held - us[i], holds = holds - 1, "
	"     n_exclusive = n_exclusive - (h.mode = 2)::int WHERE name = names[i] "
	"     RETURNING NOT declared AND holds = 0 INTO idle; "
	"    IF idle AND NOT EXISTS (SELECT 1 FROM waiter_claims w WHERE w.resource = names[i]) THEN "
	"     DELETE FROM resources WHERE name = names[i]; END IF; "
	"    data := data || CASE WHEN i = 1 THEN '' ELSE ',' END || '{\"name\":' "
	"     || to_json(names[i])::text || ',\"units\":' || us[i] || '}'; "
	"   END LOOP; "
	"   UPDATE holds SET state = 2, ended_at = t WHERE id = p_id RETURNING * INTO h; "
	"   UPDATE live_holds SET n = n - 1 WHERE slot = pg_backend_pid() % 64; "
	"   data := '{' || CASE WHEN p_by IS NULL THEN '' ELSE '\"by\":' || to_json(p_by)::text "
	"    || ',' END || '\"id\":' || to_json(h.id)::text || ',\"owner\":' "
	"    || to_json(h.owner)::text || ',\"resources\":[' || data || ']}'; "
	"  ELSIF h.state = 0 AND p_op = 'extend' THEN "
	"   UPDATE holds SET expires_at = t + p_ttl WHERE id = p_id RETURNING * INTO h; "
	"   data := '{\"expires_at_ms\":' || h.expires_at || ',\"id\":' || to_json(h.id)::text "
	"    || '}'; "
	"  ELSIF h.state = 0 AND p_op = 'confirm' THEN "
	"   UPDATE holds SET state = 1, expires_at = 0 WHERE id = p_id RETURNING * INTO h; "
	"   data := '{\"id\":' || to_json(h.id)::text || ',\"owner\":' || to_json(h.owner)::text "
	"    || '}'; "
	"  END IF; "
	"  IF data <> '' AND cardinality(names) = 1 THEN "
	"   INSERT INTO event_revisions AS v VALUES (names[1], 1) ON CONFLICT (resource) "
	"    DO UPDATE SET revision = v.revision + 1 RETURNING revision INTO rev; "
	"   INSERT INTO events (at_ms, type, resource, hold_id, data, revision) "
	"    VALUES (t, CASE p_op WHEN 'release' THEN 'hold.released' WHEN 'extend' THEN "
	"    'hold.extended' ELSE 'hold.confirmed' END, names[1], p_id, data, rev); "
	"  ELSIF data <> '' THEN "
	"   PERFORM hf_event(t, CASE p_op WHEN 'release' THEN 'hold.released' WHEN 'extend' THEN "
	"    'hold.extended' ELSE 'hold.confirmed' END, p_id, names, data); "
	"  END IF; "
	"  RETURN QUERY SELECT o_verdict, t, h.token, h.owner, h.state, h.mode, h.created_at, "
	"   h.expires_at, h.ended_at, x.n, x.u, x.f FROM unnest(names, us, fs) x(n, u, f); "
	" END $f$; ",
	/* 7 -> 8: one lock order over all the names of an acquire, whether their rows exist or
	 * not (docs/operations.md, "Schema version 8"). Up to 7, an acquire of several names locked
	 * the rows that existed, then the advisory locks of the missing ones: two acquires whose
	 * statements saw different names missing (one created meanwhile) could wait for each
	 * other, a deadlock PostgreSQL broke after deadlock_timeout (the loser ran again). Now an
	 * acquire of several names (or a NOWAIT any-of) takes every name's advisory lock first, in
	 * key order, and only then the rows, in name order; one of a single name that exists locks
	 * its row and nothing else, one that is missing takes its advisory lock and then looks
	 * again. No change waits for an advisory lock while it holds a resource row, so no cycle
	 * of waits. A NOWAIT any-of tries each advisory lock and locks rows SKIP LOCKED: a name
	 * another change is creating or weighing is passed over, as taken for now; it never
	 * blocks. ops.c's resolve() takes its locks the same way. */
	"CREATE OR REPLACE FUNCTION hf_acquire(p_names text[], p_units bigint[], p_caps bigint[], "
	"  p_any boolean, p_skip boolean, p_wait boolean, p_mode int, p_mode_name text, "
	"  p_owner text, p_ttl bigint, p_id text, p_token text, p_max_holds bigint, "
	"  p_max_resources bigint) "
	"  RETURNS TABLE (o_verdict text, o_at bigint, o_name text, o_units bigint, o_fence bigint, "
	"  o_n bigint) LANGUAGE plpgsql AS $f$ "
	" DECLARE t bigint := now_ms(); k int := cardinality(p_names); r record; "
	"  ex boolean[]; cap bigint[]; held bigint[]; nex bigint[]; q boolean[]; u bigint[]; "
	"  fit boolean[]; i int; a int := 0; b int := -1; cnt bigint; mk int := 0; uu bigint; "
	"  parts text := ''; fen bigint; live bigint; rev bigint; busy boolean[]; hk int; "
	"  fr text[]; "
	" BEGIN "
	"  IF coalesce((SELECT min(expires_at) FROM holds WHERE state = 0) <= t, false) "
	"   OR coalesce((SELECT min(lease_until) FROM waiters) < t, false) THEN "
	"   RETURN QUERY SELECT 'slow', t, NULL::text, 0::bigint, 0::bigint, 0::bigint; RETURN; "
	"  END IF; "
	"  SELECT coalesce(sum(n), 0) INTO live FROM live_holds; "
	"  ex := array_fill(false, ARRAY[k]); cap := array_fill(0::bigint, ARRAY[k]); "
	"  held := cap; nex := cap; u := cap; q := ex; fit := ex; busy := ex; "
	"  IF k = 1 AND NOT p_skip THEN "
	"   SELECT x.capacity AS c, x.held AS h, x.n_exclusive AS e, EXISTS (SELECT 1 FROM "
	"    waiter_claims w WHERE w.resource = x.name) AS w INTO r FROM resources x "
	"    WHERE x.name = p_names[1] FOR UPDATE; "
	"   IF NOT FOUND THEN "
	"    PERFORM pg_advisory_xact_lock(729, hashtext(p_names[1])); "
	"    SELECT x.capacity AS c, x.held AS h, x.n_exclusive AS e, EXISTS (SELECT 1 FROM "
	"     waiter_claims w WHERE w.resource = x.name) AS w INTO r FROM resources x "
	"     WHERE x.name = p_names[1] FOR UPDATE; "
	"   END IF; "
	"   IF FOUND THEN ex[1] := true; cap[1] := r.c; held[1] := r.h; nex[1] := r.e; "
	"    q[1] := r.w; END IF; "
	"  ELSE "
	"   FOR hk IN SELECT DISTINCT hashtext(z.n) FROM unnest(p_names) z(n) ORDER BY 1 LOOP "
	"    IF NOT p_skip THEN PERFORM pg_advisory_xact_lock(729, hk); "
	"    ELSIF NOT pg_try_advisory_xact_lock(729, hk) THEN "
	"     FOR i IN 1..k LOOP IF hashtext(p_names[i]) = hk THEN busy[i] := true; END IF; "
	"     END LOOP; "
	"    END IF; "
	"   END LOOP; "
	"   fr := ARRAY(SELECT p_names[j] FROM generate_series(1, k) j WHERE NOT busy[j]); "
	"   IF p_skip THEN "
	"    FOR r IN SELECT x.name, coalesce(l.capacity, x.capacity) AS c, "
	"     l.held AS h, l.n_exclusive AS e, EXISTS (SELECT 1 FROM waiter_claims w WHERE "
	"     w.resource = x.name) OR l.name IS NULL AS w FROM resources x LEFT JOIN LATERAL "
	"     (SELECT y.name, y.capacity, y.held, y.n_exclusive FROM resources y WHERE "
	"     y.name = x.name FOR UPDATE SKIP LOCKED) l ON true WHERE x.name = ANY(fr) "
	"     ORDER BY x.name LOOP "
	"     i := array_position(p_names, r.name::text); "
	"     ex[i] := true; cap[i] := r.c; held[i] := r.h; nex[i] := r.e; q[i] := r.w; "
	"    END LOOP; "
	"   ELSE "
	"    FOR r IN SELECT x.name, x.capacity AS c, x.held AS h, x.n_exclusive AS e, "
	"     EXISTS (SELECT 1 FROM waiter_claims w WHERE w.resource = x.name) AS w "
	"     FROM resources x WHERE x.name = ANY(p_names) ORDER BY x.name FOR UPDATE LOOP "
	"     i := array_position(p_names, r.name::text); "
	"     ex[i] := true; cap[i] := r.c; held[i] := r.h; nex[i] := r.e; q[i] := r.w; "
	"    END LOOP; "
	"   END IF; "
	"  END IF; "
	"  FOR i IN 1..k LOOP CONTINUE WHEN busy[i]; "
	"   IF NOT ex[i] AND p_caps[i] = 0 THEN RETURN QUERY SELECT 'no_resource', t, p_names[i], "
	"    0::bigint, 0::bigint, 0::bigint; RETURN; END IF; "
	"   IF ex[i] AND p_caps[i] > 0 AND p_caps[i] <> cap[i] THEN RETURN QUERY SELECT "
	"    'cap_mismatch', t, p_names[i], p_caps[i], 0::bigint, cap[i]; RETURN; END IF; "
	"   IF NOT ex[i] THEN cap[i] := p_caps[i]; mk := mk + 1; END IF; "
	"   u[i] := CASE p_mode WHEN 0 THEN p_units[i] WHEN 1 THEN 1 ELSE 0 END; "
	"   IF u[i] > cap[i] THEN RETURN QUERY SELECT 'capacity', t, p_names[i], u[i], 0::bigint, "
	"    cap[i]; RETURN; END IF; "
	"  END LOOP; "
	"  IF mk > 0 THEN SELECT count(*) INTO cnt FROM resources; "
	"   IF cnt + mk > p_max_resources THEN RETURN QUERY SELECT 'limit_resources', t, "
	"    NULL::text, 0::bigint, 0::bigint, cnt; RETURN; END IF; "
	"  END IF; "
	"  FOR i IN 1..k LOOP "
	"   fit[i] := NOT busy[i] AND (NOT ex[i] OR (NOT q[i] AND CASE WHEN u[i] = 0 THEN held[i] = 0 "
	"    ELSE nex[i] = 0 AND cap[i] - held[i] >= u[i] END)); "
	"   IF p_any AND fit[i] AND b < 0 THEN a := i; b := i; END IF; "
	"  END LOOP; "
	"  IF NOT p_any AND k > 0 AND NOT (false = ANY(fit)) THEN a := 1; b := k; END IF; "
	"  IF b < 0 THEN "
	"   IF p_wait OR EXISTS (SELECT 1 FROM hold_parts p JOIN holds h ON h.id = p.hold_id "
	"    WHERE p.resource = ANY(SELECT p_names[j] FROM generate_series(1, k) j WHERE ex[j] "
	"    AND NOT fit[j]) AND h.state = 0 AND h.expires_at <= t) THEN "
	"    RETURN QUERY SELECT 'slow', t, NULL::text, 0::bigint, 0::bigint, 0::bigint; RETURN; "
	"   END IF; "
	"   RETURN QUERY SELECT 'unavailable', t, NULL::text, 0::bigint, 0::bigint, k::bigint; "
	"   RETURN; "
	"  END IF; "
	"  IF live >= p_max_holds THEN RETURN QUERY "
	"   SELECT 'limit_holds', t, NULL::text, 0::bigint, 0::bigint, 0::bigint; RETURN; END IF; "
	"  INSERT INTO holds (id, token, owner, state, mode, created_at, expires_at, ended_at) "
	"   VALUES (p_id, p_token, p_owner, 0, p_mode, t, t + p_ttl, 0); "
	"  FOR i IN a..b LOOP "
	"   uu := CASE WHEN u[i] = 0 THEN cap[i] ELSE u[i] END; "
	"   IF ex[i] THEN "
	"    UPDATE resources x SET held = x.held + uu, holds = x.holds + 1, "
	"     n_exclusive = x.n_exclusive + (p_mode = 2)::int WHERE x.name = p_names[i]; "
	"   ELSE "
	"    INSERT INTO resources (name, capacity, version, declared, held, holds, n_exclusive) "
	"     VALUES (p_names[i], cap[i], 0, false, uu, 1, (p_mode = 2)::int); "
	"   END IF; "
	"   INSERT INTO hold_parts (hold_id, idx, resource, units, fence) "
	"    VALUES (p_id, i - a, p_names[i], uu, nextval('fences')) RETURNING fence INTO fen; "
	"   parts := parts || CASE WHEN i > a THEN ',' ELSE '' END || '{\"fence\":' || fen "
	"    || ',\"name\":' || to_json(p_names[i])::text || ',\"units\":' || uu || '}'; "
	"   o_verdict := 'granted'; o_at := t; o_name := p_names[i]; o_units := uu; "
	"   o_fence := fen; o_n := 0; RETURN NEXT; "
	"  END LOOP; "
	"  UPDATE live_holds SET n = n + 1 WHERE slot = pg_backend_pid() % 64; "
	"  parts := '{\"expires_at_ms\":' || (t + p_ttl) || ',\"id\":' || to_json(p_id)::text "
	"   || ',\"mode\":' || to_json(p_mode_name)::text || ',\"owner\":' || to_json(p_owner)::text "
	"   || ',\"resources\":[' || parts || ']}'; "
	"  IF a = b THEN "
	"   INSERT INTO event_revisions AS v VALUES (p_names[a], 1) ON CONFLICT (resource) "
	"    DO UPDATE SET revision = v.revision + 1 RETURNING revision INTO rev; "
	"   INSERT INTO events (at_ms, type, resource, hold_id, data, revision) "
	"    VALUES (t, 'hold.granted', p_names[a], p_id, parts, rev); "
	"  ELSE "
	"   PERFORM hf_event(t, 'hold.granted', p_id, p_names[a:b], parts); "
	"  END IF; "
	" END $f$; ",
	/* 8 -> 9: less WAL per grant (docs/operations.md, "Schema version 9"). An event row is
	 * written once by its change and once by the reader that numbers it: events leave room on
	 * each page (fillfactor 50), so that update stays on the row's page and its WAL record
	 * carries the changed bytes only, not the whole row. The unique seq index holds
	 * numbered events only (a NULL entry per insert bought nothing), and events lose their id
	 * key: ids come from a sequence, and the numbering finds the rows to number, and each of
	 * them, through events_unsequenced. hold_parts loses its foreign key (a check
	 * per part, locking the hold's row): parts are written only beside their hold, and the
	 * purge of ended holds deletes their parts in the same statement. */
	"ALTER TABLE events SET (fillfactor = 50); "
	"DROP INDEX events_seq; "
	"CREATE UNIQUE INDEX events_seq ON events (seq) WHERE seq IS NOT NULL; "
	"ALTER TABLE events DROP CONSTRAINT events_pkey; "
	"ALTER TABLE hold_parts DROP CONSTRAINT hold_parts_hold_id_fkey; "
	"CREATE OR REPLACE FUNCTION sequence_events() RETURNS bigint LANGUAGE plpgsql "
	"  SET search_path FROM CURRENT AS $$ "
	" DECLARE last bigint; n bigint; "
	" BEGIN "
	"  IF NOT EXISTS (SELECT 1 FROM events WHERE seq IS NULL) THEN "
	"   RETURN (SELECT last_seq FROM event_head WHERE id = 1); "
	"  END IF; "
	"  SELECT last_seq INTO last FROM event_head WHERE id = 1 FOR UPDATE; "
	"  UPDATE events e SET seq = last + t.k FROM (SELECT id, row_number() OVER (ORDER BY id) k "
	"   FROM events WHERE seq IS NULL ORDER BY id LIMIT 10000) t "
	"   WHERE e.id = t.id AND e.seq IS NULL; "
	"  GET DIAGNOSTICS n = ROW_COUNT; "
	"  UPDATE event_head SET last_seq = last + n WHERE id = 1; "
	"  RETURN last + n; "
	" END $$; "
	/* The functions, fewer statements per call (each one sets up an executor): the due check
	 * and the live count in one; a grant of one part writes its hold, part, resource, live
	 * count, revision counter and event in one statement; a release that is allowed ends its
	 * hold in the statement that locks the row (no separate row lock), and writes its live
	 * count, revision counter and event in one. The revision counter is advanced by a plain
	 * UPDATE (an upsert's conflict path first locks the row: a WAL record more); only a
	 * name's first event creates it (hf_event). Same lock order (the hold's row, its
	 * resources' rows, then the live slot and the revision counter, which no change takes
	 * without its resource's row), same answers. */
	ACQUIRE_V9("SELECT count(*) INTO cnt FROM resources;")
	"CREATE OR REPLACE FUNCTION hf_hold_change(p_op text, p_id text, p_token text, p_by text, "
	"  p_ttl bigint, p_retention bigint) "
	"  RETURNS TABLE (o_verdict text, o_at bigint, o_token text, o_owner text, o_state int, "
	"  o_mode int, o_created bigint, o_expires bigint, o_ended bigint, o_name text, "
	"  o_units bigint, o_fence bigint) LANGUAGE plpgsql AS $f$ "
	" DECLARE t bigint := now_ms(); h holds; idle boolean; "
	"  names text[] := '{}'; us bigint[] := '{}'; fs bigint[] := '{}'; data text := ''; "
	"  i int; "
	" BEGIN "
	"  IF coalesce((SELECT min(expires_at) FROM holds WHERE state = 0) <= t, false) "
	"   OR coalesce((SELECT min(lease_until) FROM waiters) < t, false) THEN "
	"   RETURN QUERY SELECT 'slow', t, NULL::text, NULL::text, 0, 0, "
	"   0::bigint, 0::bigint, 0::bigint, NULL::text, 0::bigint, 0::bigint; RETURN; END IF; "
	/* A release that is allowed ends the hold in the statement that locks its row; any other
	 * change, or a refusal, reads and locks the row first. */
	"  o_verdict := 'done'; "
	"  IF p_op = 'release' THEN "
	"   UPDATE holds SET state = 2, ended_at = t WHERE id = p_id AND state < 2 "
	"    AND (state = 1 OR expires_at > t) AND (p_by IS NOT NULL OR token = p_token) "
	"    RETURNING * INTO h; "
	"  END IF; "
	"  IF h.id IS NULL THEN "
	"   SELECT * INTO h FROM holds WHERE id = p_id "
	"    AND (state < 2 OR ended_at > t - p_retention) FOR UPDATE; "
	"   IF NOT FOUND THEN RETURN QUERY SELECT 'no_hold', t, NULL::text, NULL::text, 0, 0, "
	"    0::bigint, 0::bigint, 0::bigint, NULL::text, 0::bigint, 0::bigint; RETURN; END IF; "
	"   IF (p_by IS NULL AND h.token IS DISTINCT FROM p_token) OR h.state >= 2 THEN "
	"    o_verdict := 'refused'; "
	"   ELSIF h.state = 0 AND h.expires_at <= t THEN "
	"    RETURN QUERY SELECT 'slow', t, NULL::text, NULL::text, 0, 0, "
	"    0::bigint, 0::bigint, 0::bigint, NULL::text, 0::bigint, 0::bigint; RETURN; "
	"   ELSIF p_op = 'release' THEN "
	"    UPDATE holds SET state = 2, ended_at = t WHERE id = p_id RETURNING * INTO h; "
	"   END IF; "
	"  END IF; "
	"  SELECT coalesce(array_agg(resource ORDER BY idx), '{}'), "
	"   coalesce(array_agg(units ORDER BY idx), '{}'), coalesce(array_agg(fence ORDER BY idx), "
	"   '{}') INTO names, us, fs FROM hold_parts WHERE hold_id = p_id; "
	"  IF o_verdict = 'refused' THEN NULL; "
	"  ELSIF p_op = 'release' THEN "
	"   FOR i IN 1..cardinality(names) LOOP "
	"    UPDATE resources SET held = held - us[i], holds = holds - 1, "
	"     n_exclusive = n_exclusive - (h.mode = 2)::int WHERE name = names[i] "
	"     RETURNING NOT declared AND holds = 0 INTO idle; "
	"    IF idle THEN DELETE FROM resources WHERE name = names[i] AND NOT EXISTS "
	"     (SELECT 1 FROM waiter_claims w WHERE w.resource = names[i]); END IF; "
	"    data := data || CASE WHEN i = 1 THEN '' ELSE ',' END || '{\"name\":' "
	"     || to_json(names[i])::text || ',\"units\":' || us[i] || '}'; "
	"   END LOOP; "
	"   data := '{' || CASE WHEN p_by IS NULL THEN '' ELSE '\"by\":' || to_json(p_by)::text "
	"    || ',' END || '\"id\":' || to_json(h.id)::text || ',\"owner\":' "
	"    || to_json(h.owner)::text || ',\"resources\":[' || data || ']}'; "
	"  ELSIF h.state = 0 AND p_op = 'extend' THEN "
	"   UPDATE holds SET expires_at = t + p_ttl WHERE id = p_id RETURNING * INTO h; "
	"   data := '{\"expires_at_ms\":' || h.expires_at || ',\"id\":' || to_json(h.id)::text "
	"    || '}'; "
	"  ELSIF h.state = 0 AND p_op = 'confirm' THEN "
	"   UPDATE holds SET state = 1, expires_at = 0 WHERE id = p_id RETURNING * INTO h; "
	"   data := '{\"id\":' || to_json(h.id)::text || ',\"owner\":' || to_json(h.owner)::text "
	"    || '}'; "
	"  END IF; "
	/* The live count, the revision counter and the event: one statement. */
	"  IF data <> '' AND cardinality(names) = 1 THEN "
	"   WITH lv AS (UPDATE live_holds SET n = n - 1 WHERE slot = pg_backend_pid() % 64 "
	"    AND p_op = 'release'), "
	"   rv AS (UPDATE event_revisions SET revision = revision + 1 WHERE resource = names[1] "
	"    RETURNING revision) "
	"   INSERT INTO events (at_ms, type, resource, hold_id, data, revision) "
	"    SELECT t, CASE p_op WHEN 'release' THEN 'hold.released' WHEN 'extend' THEN "
	"    'hold.extended' ELSE 'hold.confirmed' END, names[1], p_id, data, revision FROM rv; "
	"   GET DIAGNOSTICS i = ROW_COUNT; "
	"   IF i = 0 THEN PERFORM hf_event(t, CASE p_op WHEN 'release' THEN 'hold.released' "
	"    WHEN 'extend' THEN 'hold.extended' ELSE 'hold.confirmed' END, p_id, names, data); "
	"   END IF; "
	"  ELSIF data <> '' THEN "
	"   IF p_op = 'release' THEN "
	"    UPDATE live_holds SET n = n - 1 WHERE slot = pg_backend_pid() % 64; END IF; "
	"   PERFORM hf_event(t, CASE p_op WHEN 'release' THEN 'hold.released' WHEN 'extend' THEN "
	"    'hold.extended' ELSE 'hold.confirmed' END, p_id, names, data); "
	"  END IF; "
	"  o_at := t; o_token := h.token; o_owner := h.owner; o_state := h.state; "
	"  o_mode := h.mode; o_created := h.created_at; o_expires := h.expires_at; "
	"  o_ended := h.ended_at; "
	"  FOR i IN 1..cardinality(names) LOOP "
	"   o_name := names[i]; o_units := us[i]; o_fence := fs[i]; RETURN NEXT; "
	"  END LOOP; "
	" END $f$; ",
	/* 9 -> 10: the resource count for max_resources in 64 slots, as the live hold count
	 * (live_holds), instead of a count(*) over resources on every creation (issue 10). The
	 * slots are kept by triggers on resources, so that every path that creates or drops a
	 * resource (these functions, ops.c, an older build still running) counts. A change adds
	 * its net count to its slot once, at commit (a deferred trigger), after every other lock
	 * it takes: the slot row never enters the lock order (the hold's row, its resources' rows
	 * in name order; a release drops its idle names one by one between them), and a
	 * statement that creates or drops many rows updates the slot once, not once a row (a
	 * row updated n times in one transaction costs O(n) per update: 100,000 took 150 s).
	 * Until then the count is carried in a setting local to the transaction, by a row
	 * trigger (a statement trigger would run for every grant's INSERT that adds nothing).
	 * (Settings by assignments, not PERFORM: an expression, not a statement of its own.)
	 * A TRUNCATE empties the slots (PostgreSQL refuses one after rows changed in its
	 * transaction). The table lock first: no writer is half-way while the rows are counted. */
	"LOCK TABLE resources IN SHARE ROW EXCLUSIVE MODE; "
	"CREATE TABLE live_resources (slot int PRIMARY KEY, n bigint NOT NULL); "
	"INSERT INTO live_resources SELECT s, CASE WHEN s = 0 THEN (SELECT count(*) FROM resources) "
	"  ELSE 0 END FROM generate_series(0, 63) s; "
	"CREATE FUNCTION live_resources_delta() RETURNS trigger LANGUAGE plpgsql AS $$ "
	" DECLARE k text := 'holdfast.resources_' || TG_RELID; "
	" BEGIN "
	"  k := set_config(k, (coalesce(nullif(current_setting(k, true), ''), '0')::bigint "
	"   + CASE TG_OP WHEN 'INSERT' THEN 1 ELSE -1 END)::text, true); "
	"  RETURN NULL; "
	" END $$; "
	"CREATE FUNCTION live_resources_apply() RETURNS trigger LANGUAGE plpgsql "
	"  SET search_path FROM CURRENT AS $$ "
	" DECLARE k text := 'holdfast.resources_' || TG_RELID; "
	"  d bigint := coalesce(nullif(current_setting(k, true), ''), '0')::bigint; "
	" BEGIN "
	"  IF TG_OP = 'TRUNCATE' THEN UPDATE live_resources SET n = 0 WHERE n <> 0; "
	"  ELSIF d <> 0 THEN UPDATE live_resources SET n = n + d WHERE slot = pg_backend_pid() % 64; "
	"  ELSE RETURN NULL; "
	"  END IF; "
	"  k := set_config(k, '0', true); "
	"  RETURN NULL; "
	" END $$; "
	"CREATE TRIGGER live_resources_delta AFTER INSERT OR DELETE ON resources "
	"  FOR EACH ROW EXECUTE FUNCTION live_resources_delta(); "
	"CREATE CONSTRAINT TRIGGER live_resources_apply AFTER INSERT OR DELETE ON resources "
	"  DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION live_resources_apply(); "
	"CREATE TRIGGER live_resources_truncate AFTER TRUNCATE ON resources "
	"  FOR EACH STATEMENT EXECUTE FUNCTION live_resources_apply(); "
	ACQUIRE_V9("SELECT coalesce(sum(n), 0) INTO cnt FROM live_resources;"),
	/* 10 -> 11: numbering in linear time whatever the planner believes. The numbering joined
	 * the events to number with a subquery that numbered them (row_number); when the table's
	 * statistics said few events wait (an ANALYZE taken while readers kept up) the planner
	 * took both sides for one row and ran the subquery once per event: n^2 in the events
	 * waiting to be numbered. A reader numbering a few events at a time never noticed; a
	 * backlog of 2,336 took 8.4 s (a reader that had paused under load), and one of 10,000
	 * would pass statement_timeout on every try: reading would never recover. Now the
	 * ids are read once, in order, and each event gets its position in that array; the join
	 * of that array with the events is never a nested loop, which estimates could again make
	 * quadratic (a hash join: linear in the backlog). */
	"CREATE OR REPLACE FUNCTION sequence_events() RETURNS bigint LANGUAGE plpgsql "
	"  SET search_path FROM CURRENT SET enable_nestloop = off AS $$ "
	" DECLARE last bigint; n bigint; ids bigint[]; "
	" BEGIN "
	"  IF NOT EXISTS (SELECT 1 FROM events WHERE seq IS NULL) THEN "
	"   RETURN (SELECT last_seq FROM event_head WHERE id = 1); "
	"  END IF; "
	"  SELECT last_seq INTO last FROM event_head WHERE id = 1 FOR UPDATE; "
	"  ids := ARRAY(SELECT id FROM events WHERE seq IS NULL ORDER BY id LIMIT 10000); "
	"  UPDATE events e SET seq = last + u.k FROM unnest(ids) WITH ORDINALITY u(id, k) "
	"   WHERE e.id = u.id AND e.seq IS NULL; "
	"  GET DIAGNOSTICS n = ROW_COUNT; "
	"  UPDATE event_head SET last_seq = last + n WHERE id = 1; "
	"  RETURN last + n; "
	" END $$; ",
};

void hf__pgc_close(struct hf__pgc *c)
{
	if (c->conn)
		PQfinish(c->conn);
	c->conn = NULL;
	c->listening = false;
	c->prepared = false;
}

/* Copies src into dst (size n) as one line: newlines and tabs become single spaces. */
static void one_line(char *dst, size_t n, const char *src)
{
	size_t o = 0;
	bool space = false;
	for (; *src && o + 1 < n; src++) {
		bool ws = *src == '\n' || *src == '\t' || *src == '\r' || *src == ' ';
		if (ws) {
			space = o > 0;
			continue;
		}
		if (space && o + 2 < n)
			dst[o++] = ' ';
		space = false;
		dst[o++] = *src;
	}
	dst[o] = '\0';
}

int hf__pg_fail(hf_error *err, PGconn *conn, const char *prefix)
{
	char msg[200];
	one_line(msg, sizeof(msg), conn ? PQerrorMessage(conn) : "out of memory");
	return hf__err(err, HF_EENGINE, "%s: %s", prefix, msg);
}

/* Runs a command without parameters; HF_OK or HF_EENGINE with the server's message. */
static int exec_cmd(PGconn *conn, const char *sql, hf_error *err)
{
	PGresult *r = PQexec(conn, sql);
	ExecStatusType s = PQresultStatus(r);
	int rc = HF_OK;
	if (s != PGRES_COMMAND_OK && s != PGRES_TUPLES_OK)
		rc = hf__pg_fail(err, conn, "database");
	PQclear(r);
	return rc;
}

int64_t hf__pg_mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int hf__pgc_ensure(struct hf__pgc *c, hf_error *err)
{
	if (c->conn && PQconsumeInput(c->conn) && PQstatus(c->conn) == CONNECTION_OK)
		return HF_OK;
	/* A lost connection is replaced by a new one; LISTEN is re-issued by its owner. While the
	 * database is away, calls fail fast between attempts: an attempt may take up to
	 * connect_timeout, and every queued call waiting for its own would add up. */
	hf__pgc_close(c);
	int64_t now = hf__pg_mono_ms();
	/* Another connection got through since this one failed: the database is back, try now
	 * (else a call could be refused with a stale "cannot reach" after /readyz said ready). */
	bool back = c->conf->connected_ms && atomic_load(c->conf->connected_ms) > c->failed_at;
	if (c->retry_at && now < c->retry_at && !back)
		return hf__err(err, HF_EENGINE, "%s", c->last_err);
	c->conn = PQconnectdb(c->conf->conninfo);
	if (!c->conn || PQstatus(c->conn) != CONNECTION_OK) {
		hf_error e;
		hf__pg_fail(&e, c->conn, "cannot reach the database");
		snprintf(c->last_err, sizeof(c->last_err), "%s", e.message);
		c->failed_at = hf__pg_mono_ms();
		c->retry_at = c->failed_at + HF__PG_RECONNECT_MS;
		hf__pgc_close(c);
		return hf__err(err, HF_EENGINE, "%s", c->last_err);
	}
	c->retry_at = 0;
	if (c->conf->connected_ms)
		atomic_store(c->conf->connected_ms, hf__pg_mono_ms());
	char *ident = PQescapeIdentifier(c->conn, c->conf->schema, strlen(c->conf->schema));
	if (!ident) {
		hf__pgc_close(c);
		return hf__err(err, HF_EENGINE, "database: cannot quote the schema name");
	}
	char sql[512];
	/* Bounds: no statement waits for a lock longer than 5 s nor runs longer than 15 s, and a
	 * session that dies inside a transaction frees its locks within 30 s. */
	snprintf(sql, sizeof(sql),
	         "SET search_path TO %s; SET lock_timeout = '" HF__PG_LOCK_TIMEOUT "'; SET statement_timeout = '15s';"
	         " SET idle_in_transaction_session_timeout = '30s';"
	         " SET application_name = 'holdfast'; SET client_min_messages = warning;",
	         ident);
	PQfreemem(ident);
	int rc = exec_cmd(c->conn, sql, err);
	if (rc != HF_OK)
		hf__pgc_close(c);
	return rc;
}

int hf__pgc_begin(struct hf__pgc *c, const char *sql, hf_error *err)
{
	for (int attempt = 0;; attempt++) {
		int rc = hf__pgc_ensure(c, err);
		if (rc != HF_OK)
			return rc;
		rc = exec_cmd(c->conn, sql, err);
		if (rc == HF_OK || attempt > 0 || PQstatus(c->conn) == CONNECTION_OK)
			return rc;
		hf__pgc_close(c); /* found dead: one fresh connection, at once */
		hf__err_clear(err);
	}
}

int hf__pg_migrate(struct hf__pgc *c, hf_error *err)
{
	int rc = hf__pgc_ensure(c, err);
	if (rc != HF_OK)
		return rc;
	int known = (int)(sizeof(migrations) / sizeof(migrations[0]));
	/* Test hook (tests/pg/schema_test.sh; never set in production): HF_PG_TEST_SCHEMA_UPTO=N
	 * migrates an empty store only up to version N, as an older build made it. */
	const char *upto = getenv("HF_PG_TEST_SCHEMA_UPTO");
	if (upto && atoi(upto) > 0 && atoi(upto) < known)
		known = atoi(upto);
	const char *params[1] = {c->conf->schema};
	char *ident = PQescapeIdentifier(c->conn, c->conf->schema, strlen(c->conf->schema));
	if (!ident)
		return hf__err(err, HF_EENGINE, "database: cannot quote the schema name");
	char sql[512];
	snprintf(sql, sizeof(sql), "CREATE SCHEMA IF NOT EXISTS %s", ident);
	PQfreemem(ident);
	if ((rc = exec_cmd(c->conn, "BEGIN", err)) != HF_OK)
		return rc;
	/* Several instances may start at once: one migrates, the others wait and then see the
	 * new version. The key is per schema. */
	PGresult *r = PQexecParams(c->conn, "SELECT pg_advisory_xact_lock(727, hashtext($1))", 1,
	                           NULL, params, NULL, NULL, 0);
	bool ok = PQresultStatus(r) == PGRES_TUPLES_OK;
	PQclear(r);
	if (!ok) {
		rc = hf__pg_fail(err, c->conn, "database");
		goto out_rollback;
	}
	if ((rc = exec_cmd(c->conn, sql, err)) != HF_OK ||
	    (rc = exec_cmd(c->conn, "CREATE TABLE IF NOT EXISTS holdfast_schema (version int NOT NULL)",
	                   err)) != HF_OK)
		goto out_rollback;
	r = PQexec(c->conn, "SELECT coalesce(max(version), 0) FROM holdfast_schema");
	if (PQresultStatus(r) != PGRES_TUPLES_OK) {
		PQclear(r);
		rc = hf__pg_fail(err, c->conn, "database");
		goto out_rollback;
	}
	int version = atoi(PQgetvalue(r, 0, 0));
	PQclear(r);
	if (version > known) {
		rc = hf__err(err, HF_EENGINE,
		             "schema '%s' is at version %d, newer than this build's %d: upgrade holdfast",
		             c->conf->schema, version, known);
		goto out_rollback;
	}
	for (int v = version; v < known; v++) {
		char upd[96];
		snprintf(upd, sizeof(upd), "INSERT INTO holdfast_schema VALUES (%d)", v + 1);
		if ((rc = exec_cmd(c->conn, migrations[v], err)) != HF_OK ||
		    (rc = exec_cmd(c->conn, "DELETE FROM holdfast_schema", err)) != HF_OK ||
		    (rc = exec_cmd(c->conn, upd, err)) != HF_OK)
			goto out_rollback;
	}
	return exec_cmd(c->conn, "COMMIT", err);
out_rollback:
	PQclear(PQexec(c->conn, "ROLLBACK"));
	return rc;
}
