-- holds.lua — every hold rule of docs/semantics.md as one atomic Redis script, the redis://
-- engine's whole server side. Loaded once per connection as a function library (FUNCTION LOAD,
-- Redis 7) and called by FCALL with an op name, or as a script (SCRIPT LOAD, EVALSHA) where
-- FUNCTION is missing: redis.cmake makes both forms of this text, which ends with run(ARGV).
-- It mirrors src/engine/embedded/state.c step for step (same checks, order and error codes).
--
-- Call: FCALL holdfast_<id> 1 <P>seq  P op hold_ret_ms idem_ret_ms max_holds max_resources
--       kind args...   (or EVALSHA sha 1 <P>seq ..., the same arguments; kind: '1' for
--       locks=plain, 'c' on a Cluster node, else '0', then the db number)
--       or op 'batch': count, then per call its op, its number of arguments and them
-- Reply: one JSON text: {"now":ms,"due":ms|0, ...op result...}; errors as {"e":code,"m":text};
-- a hold answered by acquire (granted), extend, confirm, release or get_hold as a flat array
-- instead (hold_flat); for 'batch' an array of those answers, one per call in order, the
-- clock and due moment in the last one only.
-- Holds, resources and events in it have the wire form of src/core/codec.c (hf__*_from_json
-- reads them), except that a resource's meta and an event's data are their JSON text.
-- Keys: per resource  P{name}:r (hash) P{name}:q (waiter queue, zset by ticket) P{name}:f
-- (fence counter, never deleted) P{name}:v (its last event revision, never deleted: revisions
-- go on when an implicit resource comes back); per store  P holds/hids/exp/ended/idem/idemx/
-- res/seq/ev/w/wl/ticket/live/layout (layout: 2, see layout_check). Channels: P wake (ids of
-- waiters whose outcome is ready), P events (seq).
-- With kind '1…' (URL ?locks=plain) each resource also has its Redlock-format key: the
-- resource name itself, holding a token while holdfast holds any of its units (see "plain").

-- Per call: set by run() from the arguments before anything else runs. Everything below is
-- defined once per library load (FUNCTION LOAD) — or once per call when run as a script (EVAL,
-- Redis < 7): the closures are a large part of a call's cost, so they live at this level.
local P, OP, HOLD_RET, IDEM_RET, MAX_HOLDS, MAX_RES, PLAIN, CLUSTER
local STORE -- this store across Redis dbs: ARGV[7] .. P
local A = 8 -- first op argument

local E_NORESOURCE, E_NOHOLD, E_VERSION, E_HELD, E_UNAVAILABLE = -2, -3, -4, -5, -6
local E_CAPACITY, E_CAPMISMATCH, E_CAPINUSE, E_TOKEN, E_ENDED, E_LIMIT = -8, -9, -10, -11, -12, -13
local E_IDEMMISMATCH, E_IDEMBUSY, E_ENGINE = -14, -15, -19
local E_TRIMMED = -35
local TENTATIVE, CONFIRMED, RELEASED, EXPIRED = 0, 1, 2, 3
local UNITS, SHARED, EXCLUSIVE = 0, 1, 2
local MODE_NAME = {[0] = 'units', [1] = 'shared', [2] = 'exclusive'}
local MODE_JSON = {[0] = '"units"', [1] = '"shared"', [2] = '"exclusive"'}
local STATE_NAME = {[0] = 'tentative', [1] = 'confirmed', [2] = 'released', [3] = 'expired'}

local K_HOLDS, K_HIDS, K_EXP, K_ENDED, K_IDEM, K_IDEMX, K_RES, K_SEQ
local K_EV, K_W, K_TICKET, K_LIVE
local K_WL -- every wait record by the end of its lease (zset)
local CH_WAKE, CH_EVENTS

local function rk(n) return P .. '{' .. n .. '}:r' end
local function qk(n) return P .. '{' .. n .. '}:q' end
local function fk(n) return P .. '{' .. n .. '}:f' end
local function vk(n) return P .. '{' .. n .. '}:v' end

local NOW          -- Redis TIME in ms, read once per call
local woken = {}   -- waiter ids whose outcome is ready: published on CH_WAKE at the end
local emitted = 0  -- newest event seq written by this call
-- The next moment something falls due without a call (a lease end, the lapse of a wait), or
-- nil: read by sweep() where it reads the two indexes anyway, lowered by every entry this call
-- adds (due_at). Entries this call removes may leave it early: the engine then runs one empty
-- call, which answers the later moment — never late, which would leave a lease unenforced.
local DUE

local function due_at(t)
	if not DUE or t < DUE then DUE = t end
end
local work, in_work = {}, {} -- resources whose queue may move (the pump's worklist)

-- Integers as text: every number handed to redis.call (or concatenated) is turned into text;
-- Lua's own way is printf("%.17g"), a floating-point formatting that was a fifth of all the
-- instructions Redis spent on a call (callgrind); an integer format is a fraction of that.
local function I(x) return string.format('%d', x) end
local function S(s) return cjson.encode(s) end

-- A hold record (the values of Pholds) is packed with Redis's `struct` library: one pack on save,
-- one unpack for the head and one per resource on load. It was JSON (cjson), whose encode and
-- decode cost ~55k instructions in Redis per record, three records per acquire + release —
-- struct costs about a quarter of that (bench: docs/benchmarks.md). Layout version 2: the
-- first byte is 2. A version-1 record (JSON text, first byte '{') is still read and is
-- written as version 2 the next time the hold changes (docs/redis.md, "Layout versions").
local HOLD_V2 = 2
local HOLD_HEAD = '>BBBdddI4c0I4c0I4c0I4'
local HOLD_PART = '>I4c0dd'

local function hold_enc(h)
	local t = {struct.pack(HOLD_HEAD, HOLD_V2, h.state, h.mode, h.created, h.expires, h.ended,
	                       #h.id, h.id, #h.token, h.token, #h.owner, h.owner, #h.parts)}
	for i, p in ipairs(h.parts) do
		t[i + 1] = struct.pack(HOLD_PART, #p.name, p.name, p.units, p.fence)
	end
	return table.concat(t)
end

local function hold_dec(j)
	if string.byte(j, 1) ~= HOLD_V2 then return cjson.decode(j) end -- version 1: JSON
	local _, state, mode, created, expires, ended, id, token, owner, n, pos =
		struct.unpack(HOLD_HEAD, j)
	local h = {id = id, token = token, owner = owner, state = state, mode = mode,
	           created = created, expires = expires, ended = ended, parts = {}}
	for i = 1, n do
		local name, units, fence
		name, units, fence, pos = struct.unpack(HOLD_PART, j, pos)
		h.parts[i] = {name = name, units = units, fence = fence}
	end
	return h
end

local function err(code, msg) return {e = code, m = msg} end

-- ---- resources ----

local function res_get(n)
	local f = redis.call('HGETALL', rk(n))
	if #f == 0 then return nil end
	local r = {name = n}
	for i = 1, #f, 2 do r[f[i]] = f[i + 1] end
	r.cap, r.ver, r.held = tonumber(r.cap), tonumber(r.ver), tonumber(r.held)
	r.holds, r.nex, r.decl = tonumber(r.holds), tonumber(r.nex), r.decl == '1'
	return r
end

-- The codec's form of a resource (meta as its text: the engine parses it).
local function res_view(r)
	return {name = r.name, capacity = r.cap, meta = r.meta, version = r.ver, declared = r.decl,
	        held = r.held, holds = r.holds, waiters = redis.call('ZCARD', qk(r.name))}
end

-- A new implicit resource; held/nex (optional): the units and exclusive count of the one hold
-- it is created for, written here rather than by three HINCRBY after.
local function res_create(n, cap, held, nex)
	redis.call('HSET', rk(n), 'cap', I(cap), 'decl', '0', 'ver', '0', 'held', I(held or 0),
	           'holds', held and '1' or '0', 'nex', I(nex or 0))
	redis.call('ZADD', K_RES, '0', n)
end

-- An implicit resource vanishes once no hold and no waiter names it.
local function res_drop_if_idle(n)
	local r = res_get(n)
	if r and not r.decl and r.holds == 0 and redis.call('ZCARD', qk(n)) == 0 then
		redis.call('DEL', rk(n))
		redis.call('ZREM', K_RES, n)
	end
end

local function work_push(n)
	if not in_work[n] then
		in_work[n] = true
		work[#work + 1] = n
	end
end

-- ---- plain keys: the Redlock wire format (locks=plain) ----
-- The key is the resource name; it exists while holdfast holds any units of the resource,
-- with the token of the hold that took the resource while it was free (for a lock, the one
-- holder's token), SET NX with PX covering the latest lease end (no PX while a confirmed hold
-- is among them). A value holdfast did not write is another client's lock: it counts as the
-- whole capacity held. Other clients neither queue nor wake anyone: a waiter blocked by their
-- key is re-checked by its engine's safety re-check (collect).
-- The resource hash keeps pk (the value written), pkx (latest lease end), pkc (confirmed).

-- Names inside our own key space are never mirrored (they would overwrite holdfast's keys).
local function is_plain(n) return PLAIN and string.sub(n, 1, #P) ~= P end

-- The plain key's value, false if absent. A key of another type (a hash named like the
-- resource) is someone else's: a marker that never equals a token, not a WRONGTYPE error
-- (which would fail the script and read as "redis unreachable").
local function kget(n)
	local v = redis.pcall('GET', n)
	if type(v) == 'table' then return '\0not-a-string' end
	return v
end

-- Another client holds the plain key of n (r: its resource record or nil).
local function foreign(n, r)
	if not is_plain(n) then return false end
	local v = kget(n)
	if not v then return false end
	return not (r and r.pk and v == r.pk)
end

-- Sets the key's expiry from the resource record's pkx/pkc (value already ours).
local function plain_ttl(n, k)
	local f = redis.call('HMGET', k, 'pkx', 'pkc')
	if tonumber(f[2] or '0') > 0 then
		redis.call('PERSIST', n)
	else
		redis.call('PEXPIRE', n, I(math.max(1, tonumber(f[1] or '0') - NOW)))
	end
end

-- A grant of h took units of n: the key shows it (written if absent, expiry widened).
local function plain_take(n, h)
	if not is_plain(n) then return end
	local k = rk(n)
	local pk = redis.call('HGET', k, 'pk')
	local x = math.max(tonumber(redis.call('HGET', k, 'pkx') or '0'), h.expires)
	redis.call('HSET', k, 'pkx', I(x))
	local v = kget(n)
	if not v or v ~= pk then
		-- absent (free, or lost): write ours. A foreign value was refused before the grant.
		redis.call('SET', n, h.token, 'PX', I(math.max(1, x - NOW)))
		redis.call('HSET', k, 'pk', h.token)
		if tonumber(redis.call('HGET', k, 'pkc') or '0') > 0 then redis.call('PERSIST', n) end
	else
		plain_ttl(n, k)
	end
end

-- The key of n still shows holdfast's holds (re-written if it vanished). False if another
-- client's value is there: the holds on n are no longer exclusive of that client.
local function plain_keep(n, h)
	if not is_plain(n) then return true end
	local k = rk(n)
	local pk = redis.call('HGET', k, 'pk')
	local v = kget(n)
	if v and v ~= pk then return false end
	if not v then
		-- gone (evicted, deleted by hand): show the holds again; the ttl is set just below
		if not pk then
			pk = h.token
			redis.call('HSET', k, 'pk', pk)
		end
		redis.call('SET', n, pk)
	end
	plain_ttl(n, k)
	return true
end

-- A hold on n ended (was_confirmed: it had no lease): the last one out deletes the key,
-- owner-checked; otherwise the key keeps showing the others.
local function plain_end(n, was_confirmed)
	if not is_plain(n) then return end
	local k = rk(n)
	if was_confirmed then redis.call('HINCRBY', k, 'pkc', '-1') end
	local pk = redis.call('HGET', k, 'pk')
	if tonumber(redis.call('HGET', k, 'holds') or '0') <= 0 then
		if pk and kget(n) == pk then redis.call('DEL', n) end
		redis.call('HDEL', k, 'pk', 'pkx', 'pkc')
	elseif pk and kget(n) == pk then
		plain_ttl(n, k)
	end
end

-- ---- events ----

-- An event touching the resources `names` (the first is its resource): each one's revision
-- goes up by one. The entry keeps the first's revision (v) and, when there are more, all of
-- them as the codec's object text (vs).
local function emit(etype, names, hold_id, data)
	local seq = redis.call('INCR', K_SEQ)
	local v = I(redis.call('INCR', vk(names[1])))
	local vs = ''
	if #names > 1 then
		local revs = {S(names[1]) .. ':' .. v}
		for i = 2, #names do
			revs[i] = S(names[i]) .. ':' .. I(redis.call('INCR', vk(names[i])))
		end
		vs = '{' .. table.concat(revs, ',') .. '}'
	end
	redis.call('XADD', K_EV, I(seq) .. '-1', 'a', I(NOW), 't', etype, 'r', names[1],
	           'v', v, 'vs', vs, 'h', hold_id or '', 'd', data)
	emitted = seq
end

local function part_names(h)
	local names = {}
	for i, p in ipairs(h.parts) do names[i] = p.name end
	return names
end

local function meta_json(m) if m then return m end return 'null' end

local function resource_event_data(r)
	return '{"capacity":' .. I(r.cap) .. ',"declared":' .. tostring(r.decl) .. ',"meta":' ..
	       meta_json(r.meta) .. ',"name":' .. S(r.name) .. ',"version":' .. I(r.ver) .. '}'
end

local function parts_json(h, fences)
	local out = {}
	for i, p in ipairs(h.parts) do
		if fences then
			out[i] = '{"fence":' .. I(p.fence) .. ',"name":' .. S(p.name) .. ',"units":' .. I(p.units) .. '}'
		else
			out[i] = '{"name":' .. S(p.name) .. ',"units":' .. I(p.units) .. '}'
		end
	end
	return '[' .. table.concat(out, ',') .. ']'
end

-- ---- holds ----

local function hold_load(id)
	local j = redis.call('HGET', K_HOLDS, id)
	if not j then return nil end
	return hold_dec(j)
end

local function hold_save(h)
	redis.call('HSET', K_HOLDS, h.id, hold_enc(h))
end

-- The public view of a hold, in the codec's form (hf__hold_from_json): the token only where
-- the caller may see it; no expires_at_ms while confirmed, no ended_at_ms while live.
local function hold_view(h, with_token)
	local v = {id = h.id, owner = h.owner, state = STATE_NAME[h.state], mode = MODE_NAME[h.mode],
	           created_at_ms = h.created, resources = h.parts}
	if h.expires ~= 0 then v.expires_at_ms = h.expires end
	if h.ended ~= 0 then v.ended_at_ms = h.ended end
	if with_token then v.token = h.token end
	return v
end

-- The answer of the hot calls (acquire granted, extend, confirm, release, get_hold): the hold
-- as a flat array that Redis answers as-is and the engine reads without JSON (engine.c,
-- flat_hold) — 'hold', now, due (0, 0 but in a batch's last answer), id, owner, state, mode,
-- created, expires, ended (0: none), token ('' unless the caller may see it), the number of
-- parts, then name, units, fence per part. cjson's encode here and jansson's parse in the
-- engine were a tenth of Redis's and a third of the engine's CPU per call.
local function hold_flat(h, with_token, last)
	local t = {'hold', last and NOW or 0, last and (DUE or 0) or 0, h.id, h.owner, h.state,
	           h.mode, h.created, h.expires, h.ended, with_token and h.token or '', #h.parts}
	for i, p in ipairs(h.parts) do
		t[10 + 3 * i] = p.name
		t[11 + 3 * i] = p.units
		t[12 + 3 * i] = p.fence
	end
	return t
end

-- by: who ended it when not its holder ('operator'), or nil.
local function hold_end(h, state, ended_at, by)
	local was_confirmed = h.state == CONFIRMED
	h.state = state
	h.ended = ended_at
	for _, p in ipairs(h.parts) do
		local n = p.name
		local k = rk(n)
		local f = not is_plain(n) and redis.call('HMGET', k, 'holds', 'decl')
		if f and f[1] == '1' and f[2] == '0' and redis.call('ZCARD', qk(n)) == 0 then
			-- the last hold of an implicit resource no one waits for: it vanishes now, as
			-- res_drop_if_idle would after the pump, which has nothing to do for it (its
			-- count is read, not lowered first: the hash goes anyway)
			redis.call('DEL', k)
			redis.call('ZREM', K_RES, n)
		else
			redis.call('HINCRBY', k, 'holds', '-1')
			redis.call('HINCRBY', k, 'held', I(-p.units))
			if h.mode == EXCLUSIVE then redis.call('HINCRBY', k, 'nex', '-1') end
			plain_end(n, was_confirmed)
			work_push(n)
		end
	end
	redis.call('ZREM', K_EXP, h.id)
	redis.call('ZADD', K_ENDED, I(ended_at), h.id)
	redis.call('DECR', K_LIVE)
	hold_save(h)
	emit(state == EXPIRED and 'hold.expired' or 'hold.released', part_names(h), h.id,
	     '{' .. (by and '"by":' .. S(by) .. ',' or '') .. '"id":' .. S(h.id) .. ',"owner":' ..
	     S(h.owner) .. ',"resources":' .. parts_json(h, false) .. '}')
end

-- Takes the units: names/units in grant order (units 0 = exclusive: the whole capacity).
-- fresh (optional): name -> capacity of the resources to create for this hold.
-- Returns the hold, or nil and an error code.
local function grant(owner, mode, ttl, id, token, names, units, idem_key, fresh)
	if redis.call('INCR', K_LIVE) > MAX_HOLDS then
		redis.call('DECR', K_LIVE)
		return nil, E_LIMIT
	end
	local h = {id = id, token = token, owner = owner, state = TENTATIVE, mode = mode,
	           created = NOW, expires = NOW + ttl, ended = 0, parts = {}}
	for i, n in ipairs(names) do
		local k = rk(n)
		local u = units[i]
		local cap = fresh and fresh[n]
		if cap then
			if u == 0 then u = cap end
			res_create(n, cap, u, mode == EXCLUSIVE and 1 or 0)
			fresh[n] = nil -- a name twice in one hold: the second adds to the first
		else
			if u == 0 then u = tonumber(redis.call('HGET', k, 'cap')) end
			redis.call('HINCRBY', k, 'held', I(u))
			redis.call('HINCRBY', k, 'holds', '1')
			if mode == EXCLUSIVE then redis.call('HINCRBY', k, 'nex', '1') end
		end
		h.parts[i] = {name = n, units = u, fence = redis.call('INCR', fk(n))}
		plain_take(n, h)
	end
	hold_save(h)
	redis.call('ZADD', K_HIDS, '0', id)
	redis.call('ZADD', K_EXP, I(h.expires), id)
	due_at(h.expires)
	emit('hold.granted', names, id,
	     '{"expires_at_ms":' .. I(h.expires) .. ',"id":' .. S(id) .. ',"mode":' .. MODE_JSON[mode] ..
	     ',"owner":' .. S(owner) .. ',"resources":' .. parts_json(h, true) .. '}')
	if idem_key and idem_key ~= '' then
		local d = cjson.decode(redis.call('HGET', K_IDEM, idem_key))
		d.pending = nil
		d.created = NOW
		d.hold = h
		redis.call('HSET', K_IDEM, idem_key, cjson.encode(d))
		redis.call('ZADD', K_IDEMX, I(NOW), idem_key)
	end
	return h
end

-- ---- waiters ----
-- A waiter: K_W[id] = {st = 'p'|'g'|'f', owner, mode, ttl, any, idem, token, hid, lease,
-- ld (lease length), claims = {{n = name, u = units}...}, hold (granted), e/m (failed)};
-- queued in P{n}:q; K_WL has it by lease end. Its engine renews the lease (collect) while
-- it waits; a record whose lease ran out belongs to a process that died (w_lapsed).

local function w_load(wid)
	local j = redis.call('HGET', K_W, wid)
	if not j then return nil end
	return cjson.decode(j)
end

local function w_save(wid, w)
	redis.call('HSET', K_W, wid, cjson.encode(w))
	redis.call('ZADD', K_WL, I(w.lease), wid)
	due_at(w.lease)
end

local function w_del(wid)
	redis.call('HDEL', K_W, wid)
	redis.call('ZREM', K_WL, wid)
end

local function w_unqueue(wid, w)
	for _, c in ipairs(w.claims) do
		redis.call('ZREM', qk(c.n), wid)
		work_push(c.n)
	end
end

local function idem_forget_pending(w, wid)
	if w.idem and w.idem ~= '' then
		local j = redis.call('HGET', K_IDEM, w.idem)
		if j and cjson.decode(j).pending == wid then redis.call('HDEL', K_IDEM, w.idem) end
	end
end

-- The lapse rule, written once: a wait record whose lease ran out is gone — its process
-- stopped renewing it (crashed) — so a dead process blocks no queue longer than one lease
-- (docs/redis.md). sweep() applies it before every op, like hold expiries, so every reader
-- of a queue (a newcomer's fit check, NOWAIT, the pump) sees only live waits; q_head()
-- applies it again where a queue is read, for records without a K_WL entry.
local function w_lapsed(w) return w.lease < NOW end

local function w_drop_lapsed(wid, w)
	if w.st == 'p' then
		w_unqueue(wid, w)
		idem_forget_pending(w, wid)
	end
	w_del(wid)
end

-- The first live wait in the queue of n (wid, record), or nil; stale and lapsed entries at
-- its head are removed on the way.
local function q_head(n)
	while true do
		local wid = redis.call('ZRANGE', qk(n), '0', '0')[1]
		if not wid then return nil end
		local w = w_load(wid)
		if not w or w.st ~= 'p' then
			redis.call('ZREM', qk(n), wid) -- stale entry
		elseif w_lapsed(w) then
			w_drop_lapsed(wid, w)
		else
			return wid, w
		end
	end
end

-- Can the parked wait w never be granted, now that resource `name` has capacity `cap`?
-- Mirrors hf__wait_impossible (src/core/rules.h): an all-of wait cannot once one claim
-- exceeds its resource's capacity; an any-of wait only once every claim does.
local function wait_impossible(w, name, cap)
	for _, c in ipairs(w.claims) do
		local ccap = cap
		if c.n ~= name then
			local r = res_get(c.n)
			ccap = r and r.cap or 0
		end
		local over = c.u > ccap
		if over and not w.any then return true end
		if not over and w.any then return false end
	end
	return w.any and #w.claims > 0
end

-- Ends a parked wait without a grant; its engine collects the outcome.
local function w_fail(wid, w, code, msg)
	w_unqueue(wid, w)
	idem_forget_pending(w, wid)
	w.st, w.e, w.m = 'f', code, msg
	w.lease = NOW + (w.ld or 30000) -- time for its engine to collect it
	w_save(wid, w)
	woken[#woken + 1] = wid
end

local function link_fits(wid, n, u)
	if q_head(n) ~= wid then return false end
	local r = res_get(n)
	if not r then return false end
	if foreign(n, r) then return false end
	if u == 0 then return r.held == 0 end
	return r.nex == 0 and r.cap - r.held >= u
end

local function pump()
	local i = 1
	while i <= #work do
		local n = work[i]
		i = i + 1
		in_work[n] = nil
		while true do
			local wid, w = q_head(n)
			if not wid then break end
			local names, units = {}, {}
			if w.any then
				for _, c in ipairs(w.claims) do
					if c.n == n and link_fits(wid, n, c.u) then
						names[1], units[1] = n, c.u
					end
				end
			else
				local all = true
				for k, c in ipairs(w.claims) do
					if all and not link_fits(wid, c.n, c.u) then all = false end
					names[k], units[k] = c.n, c.u
				end
				if not all then names = {} end
			end
			if #names == 0 then break end
			w_unqueue(wid, w)
			local h, code = grant(w.owner, w.mode, w.ttl, w.hid, w.token, names, units, w.idem)
			if h then
				w.st, w.hold = 'g', h
				w.lease = NOW + (w.ld or 30000) -- time for its engine to collect it
				w_save(wid, w)
				woken[#woken + 1] = wid
			else
				w_fail(wid, w, code, 'the store\'s limit of live holds is reached')
			end
		end
		res_drop_if_idle(n)
	end
	work, in_work = {}, {}
end

-- Retention is not a rule anyone waits for: ended holds and idempotency records are kept at
-- least their retention, and deleting them up to a second later changes no answer. So it runs
-- at most once a second per store (db and prefix), or again at once while it still finds a
-- full batch: two of the ~25 redis.call a short operation made are off its path. The time
-- lives in the library's Lua state, which survives between FCALLs; in the script form
-- (EVALSHA) it is fresh every call, and retention runs every call as before.
local retain_after = {} -- STORE -> NOW from which the next retention pass runs

local function retain()
	if NOW < (retain_after[STORE] or 0) then return end
	local old = redis.call('ZRANGEBYSCORE', K_ENDED, '-inf', I(NOW - HOLD_RET), 'LIMIT', '0', '1000')
	local full = #old == 1000
	for _, id in ipairs(old) do
		redis.call('HDEL', K_HOLDS, id)
		redis.call('ZREM', K_HIDS, id)
		redis.call('ZREM', K_ENDED, id)
	end
	old = redis.call('ZRANGEBYSCORE', K_IDEMX, '-inf', I(NOW - IDEM_RET), 'LIMIT', '0', '1000')
	full = full or #old == 1000
	for _, k in ipairs(old) do
		redis.call('HDEL', K_IDEM, k)
		redis.call('ZREM', K_IDEMX, k)
	end
	retain_after[STORE] = full and 0 or NOW + 1000
end

-- ---- lazy expiry and retention: before every operation ----

-- The first score of a zset, or nil.
local function first(k)
	local f = redis.call('ZRANGE', k, '0', '0', 'WITHSCORES')
	return f[2] and tonumber(f[2])
end

local function sweep()
	DUE = nil
	local wl = first(K_WL)
	while wl and wl < NOW do
		local gone = redis.call('ZRANGEBYSCORE', K_WL, '-inf', '(' .. I(NOW), 'LIMIT', '0', '100')
		if #gone == 0 then break end
		for _, wid in ipairs(gone) do
			local w = w_load(wid)
			if w and w_lapsed(w) then w_drop_lapsed(wid, w) else redis.call('ZREM', K_WL, wid) end
		end
		pump()
		wl = first(K_WL)
	end
	local ex = first(K_EXP)
	while ex and ex <= NOW do
		local due = redis.call('ZRANGEBYSCORE', K_EXP, '-inf', I(NOW), 'LIMIT', '0', '100')
		for _, id in ipairs(due) do
			local h = hold_load(id)
			if h and h.state == TENTATIVE then
				hold_end(h, EXPIRED, h.expires)
			else
				redis.call('ZREM', K_EXP, id)
			end
		end
		pump()
		ex = first(K_EXP)
	end
	-- what the pumps above added is in DUE already
	if wl then due_at(wl) end
	if ex then due_at(ex) end
	retain()
end

-- ---- operations ----

local ops = {}

-- args: owner ttl wait can_park mode any idem_key fingerprint id token wid lease n
--       then n x (name units capacity), sorted by name unless any
function ops.acquire(a)
	local owner, ttl, wait_ms, can_park = a[1], tonumber(a[2]), tonumber(a[3]), a[4] == '1'
	local wait = wait_ms > 0
	local mode, any, ikey, fp = tonumber(a[5]), a[6] == '1', a[7], a[8]
	local id, token, wid, lease, n = a[9], a[10], a[11], tonumber(a[12]), tonumber(a[13])
	if ikey ~= '' then
		local j = redis.call('HGET', K_IDEM, ikey)
		if j then
			-- hf__idem_verdict (src/core/rules.h): another request, still waiting, or replay
			local d = cjson.decode(j)
			if d.fp ~= fp then
				return err(E_IDEMMISMATCH, 'idempotency key \'' .. ikey .. '\' was used for another request')
			end
			if d.pending then
				return err(E_IDEMBUSY, 'a request with idempotency key \'' .. ikey .. '\' is still waiting')
			end
			local first = d.hold
			local live = hold_load(first.id)
			if live then
				first.state, first.expires, first.ended = live.state, live.expires, live.ended
			end
			local v = hold_view(first, true)
			v.replayed = true
			return {hold = v}
		end
	end
	local names, units, caps, res = {}, {}, {}, {}
	local creating = 0
	for i = 1, n do
		local b = 13 + (i - 1) * 3
		local name, cu, cc = a[b + 1], tonumber(a[b + 2]), tonumber(a[b + 3])
		local r = res_get(name)
		if not r and cc == 0 then
			return err(E_NORESOURCE, 'resource \'' .. name .. '\' does not exist')
		end
		if r and cc > 0 and cc ~= r.cap then
			return err(E_CAPMISMATCH, 'resource \'' .. name .. '\' has capacity ' .. I(r.cap) ..
			           ', not ' .. I(cc))
		end
		local capacity = r and r.cap or cc
		local u = (mode == UNITS) and cu or ((mode == SHARED) and 1 or 0)
		if u > capacity then
			return err(E_CAPACITY, I(u) .. ' units of \'' .. name .. '\' exceed its capacity ' .. I(capacity))
		end
		names[i], units[i], caps[i], res[i] = name, u, capacity, r
		if not r then creating = creating + 1 end
	end
	local count = redis.call('ZCARD', K_RES)
	if count + creating > MAX_RES then
		return err(E_LIMIT, 'the store holds ' .. I(count) .. ' resources, the limit is ' .. I(MAX_RES))
	end
	-- No barging: a resource with waiters grants nothing to newcomers.
	local blocked -- a name whose plain key another client holds, for the message
	local function fits_now(i)
		local r = res[i]
		if foreign(names[i], r) then
			blocked = blocked or names[i]
			return false
		end
		if not r then return true end
		if q_head(r.name) then return false end
		if units[i] == 0 then return r.held == 0 end
		return r.nex == 0 and r.cap - r.held >= units[i]
	end
	-- hf__claims_grantable (src/core/rules.h): any-of takes the first claim that fits, in the
	-- caller's order; all-of takes every claim or none.
	local from, to = 0, -1
	if any then
		for i = 1, n do
			if to < 0 and fits_now(i) then from, to = i, i end
		end
	else
		local all = true
		for i = 1, n do
			if all and not fits_now(i) then all = false end
		end
		if all then from, to = 1, n end
	end
	-- resources this call creates (res[] was read above: no second read of a missing one)
	local made = {}
	if to >= from and from > 0 then
		local gn, gu = {}, {}
		for i = from, to do
			if not res[i] and not made[names[i]] then made[names[i]] = caps[i] end
			gn[#gn + 1], gu[#gu + 1] = names[i], units[i]
		end
		if ikey ~= '' then
			redis.call('HSET', K_IDEM, ikey, cjson.encode({fp = fp, created = NOW}))
		end
		local h, code = grant(owner, mode, ttl, id, token, gn, gu, ikey, made)
		if not h then
			if ikey ~= '' then redis.call('HDEL', K_IDEM, ikey) end
			for i = from, to do res_drop_if_idle(names[i]) end
			return err(code, 'the store\'s limit of live holds is reached')
		end
		return {flat = h, token = true}
	end
	if not wait then
		if blocked then
			return err(E_UNAVAILABLE, 'resource \'' .. blocked .. '\' is locked by another client (its redis key is set)')
		end
		return err(E_UNAVAILABLE, n == 1 and 'the units are not free now' or 'not all units are free now')
	end
	if not can_park then return {e = E_LIMIT, m = 'max_waiters'} end
	local w = {st = 'p', owner = owner, mode = mode, ttl = ttl, any = any, idem = ikey,
	           token = token, hid = id, lease = NOW + lease, ld = lease, claims = {},
	           since = NOW, dl = NOW + wait_ms}
	local ticket = redis.call('INCR', K_TICKET)
	for i = 1, n do
		if not res[i] and not made[names[i]] then
			res_create(names[i], caps[i])
			made[names[i]] = true
		end
		w.claims[i] = {n = names[i], u = units[i]}
		redis.call('ZADD', qk(names[i]), I(ticket), wid)
	end
	w_save(wid, w)
	if ikey ~= '' then
		redis.call('HSET', K_IDEM, ikey, cjson.encode({fp = fp, created = NOW, pending = wid}))
	end
	return {parked = wid}
end

-- args: lease wid...  The outcomes of waits: granted holds and failures are handed over
-- (and forgotten here); parked ones get their lease renewed.
function ops.collect(a)
	local lease = tonumber(a[1])
	local out = {}
	-- Other clients' locks end without telling anyone: this (the engine's re-check) is when
	-- the waiters they blocked are tried again.
	if PLAIN then
		for i = 2, #a do
			local w = w_load(a[i])
			if w and w.st == 'p' then
				for _, c in ipairs(w.claims) do
					if is_plain(c.n) then work_push(c.n) end
				end
			end
		end
		pump()
	end
	for i = 2, #a do
		local wid = a[i]
		local w = w_load(wid)
		if not w then
			out[#out + 1] = {w = wid, e = E_ENGINE, m = 'the wait was lost: redis no longer has its record'}
		elseif w.st == 'g' then
			w_del(wid)
			out[#out + 1] = {w = wid, hold = hold_view(w.hold, true)}
		elseif w.st == 'f' then
			w_del(wid)
			out[#out + 1] = {w = wid, e = w.e, m = w.m}
		else
			w.lease = NOW + lease
			w_save(wid, w)
		end
	end
	return {list = out}
end

-- args: wid code message.  Ends a parked wait (timeout, cancel, close) unless it already
-- has an outcome, which is returned instead.
function ops.unpark(a)
	local wid, code, msg = a[1], tonumber(a[2]), a[3]
	local w = w_load(wid)
	if not w then return err(E_ENGINE, 'the wait was lost: redis no longer has its record') end
	w_del(wid)
	if w.st == 'g' then return {hold = hold_view(w.hold, true)} end
	if w.st == 'f' then return err(w.e, w.m) end
	w_unqueue(wid, w)
	idem_forget_pending(w, wid)
	return err(code, msg)
end

-- hf__token_equal (src/core/rules.h): compared in time that does not depend on where the
-- tokens differ (Redis's `bit` library; a token is a capability).
local function token_equal(stored, given)
	local diff = #stored == #given and 0 or 1
	for i = 1, #stored do
		diff = bit.bor(diff, bit.bxor(string.byte(stored, i), string.byte(given, i) or 0))
	end
	return diff == 0
end

-- hf__check_owner_or_operator (src/core/rules.h): the token first (unless an operator
-- releases), so an ended hold tells a stranger nothing; then whether it has ended. Same codes
-- and messages.
local function owned_hold(id, token, by_operator)
	local h = hold_load(id)
	if not h then return nil, err(E_NOHOLD, 'hold \'' .. id .. '\' does not exist') end
	if not by_operator and not token_equal(h.token, token) then
		return nil, err(E_TOKEN, 'token does not match hold \'' .. id .. '\'')
	end
	if h.state == RELEASED or h.state == EXPIRED then
		return nil, err(E_ENDED, 'hold \'' .. id .. '\' has ' ..
		                (h.state == RELEASED and 'been released' or 'expired'))
	end
	return h
end

-- Extend and confirm re-assert the plain keys; one taken by another client means the hold
-- is no longer exclusive of it: the hold ends (expired now) and the caller learns it is lost.
local function plain_lost(h)
	for _, p in ipairs(h.parts) do
		if not plain_keep(p.name, h) then
			hold_end(h, EXPIRED, NOW)
			return err(E_ENDED, 'hold \'' .. h.id .. '\' lost resource \'' .. p.name ..
			           '\': its redis key was taken by another client')
		end
	end
	return nil
end

function ops.extend(a)
	local h, e = owned_hold(a[1], a[2])
	if not h then return e end
	if h.state == TENTATIVE then
		h.expires = NOW + tonumber(a[3])
		redis.call('ZADD', K_EXP, I(h.expires), h.id)
		due_at(h.expires)
		hold_save(h)
		for _, p in ipairs(h.parts) do
			if is_plain(p.name) then
				local k = rk(p.name)
				redis.call('HSET', k, 'pkx', math.max(tonumber(redis.call('HGET', k, 'pkx') or '0'), h.expires))
			end
		end
		local lost = plain_lost(h)
		if lost then return lost end
		emit('hold.extended', part_names(h), h.id,
		     '{"expires_at_ms":' .. I(h.expires) .. ',"id":' .. S(h.id) .. '}')
	end
	return {flat = h}
end

function ops.confirm(a)
	local h, e = owned_hold(a[1], a[2])
	if not h then return e end
	if h.state == TENTATIVE then
		h.state, h.expires = CONFIRMED, 0
		redis.call('ZREM', K_EXP, h.id)
		hold_save(h)
		for _, p in ipairs(h.parts) do
			if is_plain(p.name) then redis.call('HINCRBY', rk(p.name), 'pkc', '1') end
		end
		local lost = plain_lost(h)
		if lost then return lost end
		emit('hold.confirmed', part_names(h), h.id, '{"id":' .. S(h.id) .. ',"owner":' .. S(h.owner) .. '}')
	end
	return {flat = h}
end

-- args: id token ttl operator('1': no token, an operator's release)
function ops.release(a)
	local by_operator = a[4] == '1'
	local h, e = owned_hold(a[1], a[2], by_operator)
	if not h then return e end
	hold_end(h, RELEASED, NOW, by_operator and 'operator' or nil)
	pump()
	return {flat = h}
end

function ops.get_hold(a)
	local h = hold_load(a[1])
	if not h then return err(E_NOHOLD, 'hold \'' .. a[1] .. '\' does not exist') end
	return {flat = h}
end

-- args: cursor(''=none) limit owner(''=any) resource(''=any) state(-1=any)
function ops.list_holds(a)
	local cursor, limit, owner, resource, state = a[1], tonumber(a[2]), a[3], a[4], tonumber(a[5])
	local out, more = {}, false
	local from = cursor == '' and '-' or '(' .. cursor
	while true do
		local ids = redis.call('ZRANGEBYLEX', K_HIDS, from, '+', 'LIMIT', '0', '200')
		for _, id in ipairs(ids) do
			local h = hold_load(id)
			local ok = h ~= nil
			if ok and owner ~= '' and h.owner ~= owner then ok = false end
			if ok and state >= 0 and h.state ~= state then ok = false end
			if ok and resource ~= '' then
				local found = false
				for _, p in ipairs(h.parts) do if p.name == resource then found = true end end
				ok = found
			end
			if ok then
				if #out >= limit then more = true break end
				out[#out + 1] = hold_view(h, false)
			end
		end
		if more or #ids < 200 then break end
		from = '(' .. ids[#ids]
	end
	return {holds = out, more = more}
end

-- args: name capacity has_meta meta if_version
function ops.put_resource(a)
	local name, cap, has_meta, meta, ifv = a[1], tonumber(a[2]), a[3] == '1', a[4], tonumber(a[5])
	local r = res_get(name)
	local current = (r and r.decl) and r.ver or 0
	if ifv >= 0 and ifv ~= current then
		return err(E_VERSION, 'resource \'' .. name .. '\' is at version ' .. I(current) .. ', not ' .. I(ifv))
	end
	if r and cap < r.held then
		return err(E_CAPINUSE, 'resource \'' .. name .. '\' has ' .. I(r.held) ..
		           ' units held, more than ' .. I(cap))
	end
	if not r then
		local count = redis.call('ZCARD', K_RES)
		if count >= MAX_RES then
			return err(E_LIMIT, 'the store holds ' .. I(count) .. ' resources, the limit is ' .. I(MAX_RES))
		end
	end
	local created = (not r) or (not r.decl)
	if not r then
		res_create(name, cap)
		r = res_get(name)
	end
	local grew, shrank = cap > r.cap, cap < r.cap
	r.cap, r.decl = cap, true
	r.ver = created and 1 or r.ver + 1
	local k = rk(name)
	redis.call('HSET', k, 'cap', I(cap), 'decl', '1', 'ver', I(r.ver))
	if has_meta then
		r.meta = meta
		redis.call('HSET', k, 'meta', meta)
	else
		r.meta = nil
		redis.call('HDEL', k, 'meta')
	end
	emit(created and 'resource.created' or 'resource.updated', {name}, nil, resource_event_data(r))
	local view = res_view(r)
	if shrank then
		-- Waits that could never be granted now end and leave every queue they stood in
		-- (exclusive claims, u = 0, take whatever the capacity is, so never exceed it).
		for _, wid in ipairs(redis.call('ZRANGE', qk(name), '0', '-1')) do
			local w = w_load(wid)
			if w and w.st == 'p' and wait_impossible(w, name, cap) then
				w_fail(wid, w, E_CAPACITY, 'the resource\'s capacity was lowered below what this wait needs')
			end
		end
	end
	if grew or shrank then
		work_push(name)
		pump()
	end
	return {resource = view}
end

function ops.get_resource(a)
	local r = res_get(a[1])
	if not r then return err(E_NORESOURCE, 'resource \'' .. a[1] .. '\' does not exist') end
	return {resource = res_view(r)}
end

-- args: name if_version
function ops.delete_resource(a)
	local name, ifv = a[1], tonumber(a[2])
	local r = res_get(name)
	if not r then return err(E_NORESOURCE, 'resource \'' .. name .. '\' does not exist') end
	local current = r.decl and r.ver or 0
	if ifv >= 0 and ifv ~= current then
		return err(E_VERSION, 'resource \'' .. name .. '\' is at version ' .. I(current) .. ', not ' .. I(ifv))
	end
	if r.holds > 0 then
		return err(E_HELD, 'resource \'' .. name .. '\' is held by ' .. I(r.holds) .. ' holds')
	end
	local view = res_view(r)
	-- Its waiters can never be granted now.
	for _, wid in ipairs(redis.call('ZRANGE', qk(name), '0', '-1')) do
		local w = w_load(wid)
		if w and w.st == 'p' then
			w_fail(wid, w, E_NORESOURCE, 'the resource was deleted while waiting')
		end
	end
	redis.call('DEL', rk(name), qk(name))
	redis.call('ZREM', K_RES, name)
	if r.decl then
		emit('resource.deleted', {name}, nil, '{"name":' .. S(name) .. ',"version":' .. I(r.ver) .. '}')
	end
	in_work[name] = nil
	local rest = {}
	for _, n in ipairs(work) do if n ~= name then rest[#rest + 1] = n end end
	work = rest
	pump()
	return {resource = view}
end

-- args: name after(a position) limit.  A resource's queue in ticket order, as the engine's
-- hf_waiter: who, how much, since when, until when; never a token.
function ops.list_waiters(a)
	local name, after, limit = a[1], tonumber(a[2]), tonumber(a[3])
	if not res_get(name) then return err(E_NORESOURCE, 'resource \'' .. name .. '\' does not exist') end
	local wids = redis.call('ZRANGE', qk(name), I(after), I(after + limit))
	local out = {}
	for i = 1, math.min(#wids, limit) do
		local w = w_load(wids[i])
		if w then
			local units, claims = 0, {}
			for _, c in ipairs(w.claims) do
				claims[#claims + 1] = {name = c.n, units = c.u}
				if c.n == name then units = c.u end
			end
			table.sort(claims, function(x, y) return x.name < y.name end)
			out[#out + 1] = {position = after + i, owner = w.owner, mode = MODE_NAME[w.mode],
			                 any = w.any, units = units, waiting_since_ms = w.since or 0,
			                 wait_deadline_ms = w.dl or 0, claims = claims}
		end
	end
	return {waiters = out, more = #wids > limit}
end

-- args: cursor(''=none) limit
function ops.list_resources(a)
	local cursor, limit = a[1], tonumber(a[2])
	local names = redis.call('ZRANGEBYLEX', K_RES, cursor == '' and '-' or '(' .. cursor, '+',
	                         'LIMIT', '0', I(limit + 1))
	local out = {}
	for i = 1, math.min(#names, limit) do
		local r = res_get(names[i])
		if r then out[#out + 1] = res_view(r) end
	end
	return {resources = out, more = #names > limit}
end

-- args: after limit.  Events are served straight from the stream: written in the same
-- script as their change, so whatever is there is as durable as Redis makes anything.
function ops.read_events(a)
	local after, limit = tonumber(a[1]), tonumber(a[2])
	local last = tonumber(redis.call('GET', K_SEQ) or '0')
	local out = {}
	if after < last then
		local rows = redis.call('XRANGE', K_EV, I(after + 1) .. '-0', '+', 'COUNT', I(limit))
		-- seq is gap-free and only retention (ops.trim) deletes entries: a first entry
		-- other than after + 1 means the ones asked for were trimmed (the engine words the
		-- answer: hf__err_trimmed).
		local first = rows[1] and tonumber(string.match(rows[1][1], '^(%d+)'))
		if first ~= after + 1 then
			return {e = E_TRIMMED, upto = first and first - 1 or last}
		end
		for i, row in ipairs(rows) do
			local f = {}
			for k = 1, #row[2], 2 do f[row[2][k]] = row[2][k + 1] end
			-- the codec's form of an event (data as its text: the engine parses it). An event
			-- written before revisions has neither v nor vs.
			out[i] = {seq = tonumber(string.match(row[1], '^(%d+)')), at_ms = tonumber(f.a), type = f.t,
			          resource = f.r ~= '' and f.r or nil, hold_id = f.h ~= '' and f.h or nil, data = f.d,
			          revision = f.v and tonumber(f.v) or nil,
			          revisions = f.vs and f.vs ~= '' and cjson.decode(f.vs) or nil}
		end
	end
	return {events = out, last = last}
end

function ops.sweep(a)
	return {}
end

-- ---- event retention: the rule is core/retention.h's, run by engine.c ----

-- The seq of a stream entry and its field 'a' (its time, ms).
local function entry_at(row)
	local f = row[2]
	for k = 1, #f, 2 do
		if f[k] == 'a' then return tonumber(f[k + 1]) end
	end
	return nil
end

-- args: keep_ms batch.  What a retention pass decides by: the newest seq, the oldest kept,
-- the newest seq older than keep_ms among the oldest `batch` (a binary search by seq: entries
-- are written in seq order by scripts that read one clock, TIME, so their times only grow),
-- and every resource in the checkpoints' name range with its meta.
function ops.trim_info(a)
	local keep_ms, batch = tonumber(a[1]), tonumber(a[2])
	local last = tonumber(redis.call('GET', K_SEQ) or '0')
	local head = redis.call('XRANGE', K_EV, '-', '+', 'COUNT', '1')
	local oldest = head[1] and tonumber(string.match(head[1][1], '^(%d+)')) or 0
	local aged = 0
	if keep_ms > 0 and oldest > 0 then
		local cutoff, lo, hi = NOW - keep_ms, oldest, math.min(last, oldest + batch - 1)
		while lo <= hi do
			local mid = math.floor((lo + hi) / 2)
			local row = redis.call('XRANGE', K_EV, I(mid) .. '-0', '+', 'COUNT', '1')[1]
			local at = row and entry_at(row)
			if at and at < cutoff then
				aged = tonumber(string.match(row[1], '^(%d+)'))
				lo = aged + 1
			else
				hi = mid - 1
			end
		end
	end
	local cps = {}
	local names = redis.call('ZRANGEBYLEX', K_RES, '[holdfast.relay/', '(holdfast.relay0')
	for _, n in ipairs(names) do
		local m = redis.call('HGET', rk(n), 'meta')
		if m then cps[#cps + 1] = {n, m} end
	end
	return {last = last, oldest = oldest, aged = aged, checkpoints = cps}
end

-- args: upto.  Deletes the events with seq <= upto, as the engine's plan says (exact MINID:
-- the oldest kept is then upto + 1).
function ops.trim(a)
	return {deleted = redis.call('XTRIM', K_EV, 'MINID', I(tonumber(a[1]) + 1) .. '-1')}
end

-- ---- dispatch ----

local key_names = {} -- prefix -> its store-wide key names, made once per library load

-- The store's layout version, P layout: checked once per library load and store (it never
-- changes under a running library), so a later version's store is refused by name instead
-- of being misread. Version 1 stores (no key) are taken over: their records are read as
-- they are and rewritten in layout 2 as they change (hold_dec).
local LAYOUT = 2
local layout_checked = {} -- STORE -> true

local function layout_check()
	local k = P .. 'layout'
	local v = tonumber(redis.call('GET', k) or '1')
	if v > LAYOUT then
		return 'the store under prefix \'' .. P .. '\' has layout version ' .. I(v) ..
		       ', written by a newer holdfast; this one reads versions 1 to ' .. I(LAYOUT)
	end
	if v < LAYOUT then redis.call('SET', k, I(LAYOUT)) end
	layout_checked[STORE] = true
	return nil
end

-- One call: ARGV as in the header. The script form ends with `return run(ARGV)`, the library
-- form registers a function that calls it (both generated by redis.cmake).

-- One operation, ARGV[from..to] its arguments: its answer (JSON text, or hold_flat's array),
-- with the clock and the next due moment when it is the `last` (or only) one. An error
-- raised inside it (a redis.call refused) is its own answer, as it would be alone: the calls
-- of the same batch before and after it are not undone or lost.
local function one(op, ARGV, from, to, last)
	local f = ops[op]
	if not f then return cjson.encode(err(-1, 'unknown script op \'' .. tostring(op) .. '\'')) end
	local args = {}
	for i = from, to do args[#args + 1] = ARGV[i] end
	local ok, result = pcall(f, args)
	if not ok then
		work, in_work = {}, {}
		return cjson.encode(err(E_ENGINE, 'the redis script failed: ' .. tostring(result)))
	end
	if #work > 0 then pump() end
	if result.flat then return hold_flat(result.flat, result.token, last) end
	if last then
		result.now = NOW
		-- The next moment something falls due without a call: a lease end, or the lapse of a
		-- wait (then the engine runs an empty script, whose sweep frees the queues it was in).
		-- Only the last answer of a batch says it: by then it covers every call before.
		result.due = DUE or 0
	end
	return cjson.encode(result)
end

local function run(ARGV)
	P, OP = ARGV[1], ARGV[2]
	HOLD_RET, IDEM_RET = tonumber(ARGV[3]), tonumber(ARGV[4])
	MAX_HOLDS, MAX_RES = tonumber(ARGV[5]), tonumber(ARGV[6])
	-- ARGV[7]: the store's kind ('1' locks=plain, 'c' Cluster, '0') then its db number
	STORE = ARGV[7] .. P
	local kind = string.byte(ARGV[7], 1)
	PLAIN, CLUSTER = kind == 49, kind == 99
	local k = key_names[P]
	if not k then
		k = {P .. 'holds', P .. 'hids', P .. 'exp', P .. 'ended', P .. 'idem', P .. 'idemx',
		     P .. 'res', P .. 'seq', P .. 'ev', P .. 'w', P .. 'ticket', P .. 'live', P .. 'wl',
		     P .. 'wake', P .. 'events'}
		key_names[P] = k
	end
	K_HOLDS, K_HIDS, K_EXP, K_ENDED, K_IDEM, K_IDEMX, K_RES, K_SEQ =
		k[1], k[2], k[3], k[4], k[5], k[6], k[7], k[8]
	K_EV, K_W, K_TICKET, K_LIVE, K_WL, CH_WAKE, CH_EVENTS =
		k[9], k[10], k[11], k[12], k[13], k[14], k[15]
	-- Redis Cluster: while this store's slot is being migrated away from this node, any key
	-- that is not (or no longer) here would fail the script half-way, after some of its
	-- writes. A key that never exists tells us first, before any write: then nothing is done
	-- and the engine sends the call again later (TRYAGAIN). Elsewhere (no Cluster, a stable
	-- slot, or the importing node asked with ASKING) the probe just answers 0.
	if CLUSTER and type(redis.pcall('EXISTS', P .. 'probe')) == 'table' then
		return redis.error_reply('TRYAGAIN the slot of this store is being migrated')
	end
	if not layout_checked[STORE] then
		local bad = layout_check()
		if bad then return cjson.encode(err(E_ENGINE, bad)) end
	end
	local t = redis.call('TIME')
	NOW = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
	woken, emitted, work, in_work = {}, 0, {}, {}
	sweep()
	local out
	if OP == 'batch' then
		-- Several calls in one: count, then per call its op, its number of arguments and
		-- them. One clock reading, one sweep and one PUBLISH of each channel serve them all,
		-- instead of one each (with the FCALL itself, ~60k of the ~380k instructions a short
		-- call cost Redis); each call runs as it would alone, one after the other, inside
		-- this one atomic script, and has its own answer, in order.
		out = {}
		local i = A + 1
		local count = tonumber(ARGV[A])
		for c = 1, count do
			local op, n = ARGV[i], tonumber(ARGV[i + 1])
			out[c] = one(op, ARGV, i + 2, i + 1 + n, c == count)
			i = i + 2 + n
		end
	else
		out = one(OP, ARGV, A, #ARGV, true)
	end
	if #woken > 0 then redis.call('PUBLISH', CH_WAKE, table.concat(woken, ' ')) end
	if emitted > 0 then redis.call('PUBLISH', CH_EVENTS, I(emitted)) end
	return out
end
