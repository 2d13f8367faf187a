// interop.cjs — holdfast's redlock:// and redis://?locks=plain against the npm `redlock`
// client (5.0.0-beta.2, over ioredis) on the same keys: each refuses a lock the other holds,
// the wire format is the same (key = name, value = 32 hex characters, PX ttl), and release by
// one frees it for the other; a holdfast waiter behind a node lock gets it after node releases;
// holdfastd's lock route on redlock:// (POST /v1/locks/KEY is the Redlock key lock:KEY)
// excludes node and is excluded by it, and refuses shared locks with not_supported.
// Run by npm_interop.sh under with_redis.sh -n 3; exits non-zero on the first failed check.
'use strict';
const { spawn, spawnSync } = require('child_process');
const Redis = require('ioredis');
const RedlockMod = require('redlock');
const Redlock = RedlockMod.default || RedlockMod;

const helper = process.argv[2];
const holdfastd = process.argv[3] || '';
const ports = process.env.HF_REDIS_PORTS.trim().split(/\s+/).map(Number);
const url = 'redlock://' + ports.map((p) => '127.0.0.1:' + p).join(',');
const url1 = 'redlock://127.0.0.1:' + ports[0];
const urlPlain = 'redis://127.0.0.1:' + ports[0] + '?locks=plain';
const clients = ports.map((p) => new Redis({ port: p, host: '127.0.0.1', lazyConnect: false }));
const redlock = new Redlock(clients, { driftFactor: 0.01, retryCount: 0, retryDelay: 200, retryJitter: 100 });
const single = new Redlock([clients[0]], { retryCount: 0 });
let checks = 0;

function check(cond, what) {
	if (!cond) {
		console.error('FAIL: ' + what);
		process.exit(1);
	}
	checks++;
	console.log('ok: ' + what);
}

function tryHelper(u, name, ttl) {
	const r = spawnSync(helper, [u, 'try', name, String(ttl)], { encoding: 'utf8' });
	return { status: r.status, out: (r.stdout || '').trim() + (r.stderr || '').trim() };
}

async function nodeCannot(lockset, name) {
	try {
		const l = await lockset.acquire([name], 5000);
		await l.release();
		return false;
	} catch (e) {
		return true;
	}
}

async function main() {
	// 1. Node holds: holdfast is refused; the value is 32 hex characters with a PX ttl.
	const a = await redlock.acquire(['interop-a'], 10000);
	// Redlock promises the key on a majority of masters, not on all (a slow master may have
	// missed its per-node timeout): check the majority, and that no master has another value.
	check(/^[0-9a-f]{32}$/.test(a.value), 'node lock value is 32 hex characters');
	const holding = [];
	for (const c of clients) {
		const v = await c.get('interop-a');
		check(v === null || v === a.value, 'no other value on :' + c.options.port);
		if (v !== a.value)
			continue;
		holding.push(c);
		const ttl = await c.pttl('interop-a');
		check(ttl > 0 && ttl <= 10000, 'node lock has a PX ttl (' + ttl + ' ms)');
	}
	check(holding.length >= Math.floor(clients.length / 2) + 1,
	      'node lock is on a majority (' + holding.length + ' of ' + clients.length + ')');
	let r = tryHelper(url, 'interop-a', 5000);
	check(r.status === 3, 'holdfast refuses a lock node holds (' + r.out + ')');
	for (const c of holding)
		check(await c.get('interop-a') === a.value, 'the refused attempt left node\'s value alone');
	await a.release();
	r = tryHelper(url, 'interop-a', 5000);
	check(r.status === 0, 'after node released, holdfast takes it (' + r.out + ')');

	// 2. holdfast holds: node is refused; same wire format seen from node.
	const h = spawn(helper, [url, 'hold', 'interop-b', '10000', '2500'], { stdio: ['ignore', 'pipe', 'inherit'] });
	const first = await new Promise((res) => h.stdout.once('data', (d) => res(String(d).trim())));
	const m = /^ok ([0-9a-f]{32}) (\d+)/.exec(first);
	check(m !== null, 'holdfast holds interop-b (' + first + ')');
	const ours = []; /* a majority, as for node's lock above */
	for (const c of clients) {
		const v = await c.get('interop-b');
		check(v === null || v === m[1], 'no other value on :' + c.options.port);
		if (v !== m[1])
			continue;
		ours.push(c);
		const ttl = await c.pttl('interop-b');
		check(ttl > 0 && ttl <= 10000, 'holdfast lock has a PX ttl (' + ttl + ' ms)');
	}
	check(ours.length >= Math.floor(clients.length / 2) + 1,
	      'holdfast\'s token is on a majority (' + ours.length + ' of ' + clients.length + ')');
	check(await nodeCannot(redlock, 'interop-b'), 'node redlock refuses a lock holdfast holds');
	// node's owner-checked release of a value that is not its own changes nothing
	await ours[0].eval("if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end",
		1, 'interop-b', '0123456789abcdef0123456789abcdef');
	check(await ours[0].get('interop-b') === m[1], 'a release with another value does not free holdfast\'s lock');
	const code = await new Promise((res) => h.on('exit', res));
	check(code === 0, 'holdfast released interop-b');
	for (const c of clients)
		check(await c.get('interop-b') === null, 'released on :' + c.options.port);
	const b = await redlock.acquire(['interop-b'], 5000);
	check(true, 'node takes interop-b after holdfast released it');

	// 3. node extends: holdfast stays refused past the first ttl.
	const e = await redlock.acquire(['interop-c'], 1000);
	const e2 = await e.extend(8000);
	await new Promise((res) => setTimeout(res, 1500));
	r = tryHelper(url, 'interop-c', 5000);
	check(r.status === 3, 'holdfast refuses a lock node extended past its first ttl (' + r.out + ')');
	await e2.release();
	await b.release();

	// 4. one master ("a Redis lock"): the same both ways.
	const s = await single.acquire(['interop-d'], 10000);
	r = tryHelper(url1, 'interop-d', 5000);
	check(r.status === 3, 'single master: holdfast refuses node\'s lock (' + r.out + ')');
	await s.release();
	const h1 = spawn(helper, [url1, 'hold', 'interop-d', '10000', '1500'], { stdio: ['ignore', 'pipe', 'inherit'] });
	await new Promise((res) => h1.stdout.once('data', res));
	check(await nodeCannot(single, 'interop-d'), 'single master: node refuses holdfast\'s lock');
	check(await new Promise((res) => h1.on('exit', res)) === 0, 'single master: holdfast released');

	// 5. redis://?locks=plain on the first master: the full hold engine on the same keys.
	const n = await single.acquire(['interop-e'], 10000);
	r = tryHelper(urlPlain, 'interop-e', 5000);
	check(r.status === 3, 'redis://: holdfast refuses a lock node holds (' + r.out + ')');
	check(await clients[0].get('interop-e') === n.value, 'redis://: the refused attempt left node\'s value alone');
	await n.release();
	r = tryHelper(urlPlain, 'interop-e', 5000);
	check(r.status === 0, 'redis://: after node released, holdfast takes it (' + r.out + ')');
	check(await clients[0].get('interop-e') === null, 'redis://: holdfast\'s release deleted the key');

	const hp = spawn(helper, [urlPlain, 'hold', 'interop-f', '10000', '2500'], { stdio: ['ignore', 'pipe', 'inherit'] });
	const hpFirst = await new Promise((res) => hp.stdout.once('data', (d) => res(String(d).trim())));
	const mp = /^ok ([0-9a-f]{32}) (\d+)/.exec(hpFirst);
	check(mp !== null, 'redis://: holdfast holds interop-f (' + hpFirst + ')');
	check(await clients[0].get('interop-f') === mp[1], 'redis://: the key is the name, the value holdfast\'s token');
	const pt = await clients[0].pttl('interop-f');
	check(pt > 0 && pt <= 10000, 'redis://: holdfast lock has a PX ttl (' + pt + ' ms)');
	check(await nodeCannot(single, 'interop-f'), 'redis://: node redlock refuses a lock holdfast holds');
	await clients[0].eval("if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end",
		1, 'interop-f', '0123456789abcdef0123456789abcdef');
	check(await clients[0].get('interop-f') === mp[1], 'redis://: a release with another value does not free holdfast\'s lock');
	check(await new Promise((res) => hp.on('exit', res)) === 0, 'redis://: holdfast released interop-f');
	const nf = await single.acquire(['interop-f'], 5000);
	check(true, 'redis://: node takes interop-f after holdfast released it');
	await nf.release();

	const ne = await single.acquire(['interop-g'], 1000);
	const ne2 = await ne.extend(8000);
	await new Promise((res) => setTimeout(res, 1500));
	r = tryHelper(urlPlain, 'interop-g', 5000);
	check(r.status === 3, 'redis://: holdfast refuses a lock node extended past its first ttl (' + r.out + ')');
	// a holdfast waiter behind node's lock: node's release wakes no one, holdfast's re-check does
	const hw = spawn(helper, [urlPlain, 'wait', 'interop-g', '5000', '8000'], { stdio: ['ignore', 'pipe', 'inherit'] });
	const hwOut = new Promise((res) => hw.stdout.once('data', (d) => res(String(d).trim())));
	await new Promise((res) => setTimeout(res, 500));
	await ne2.release();
	const mw = /^ok ([0-9a-f]{32}) (\d+) (\d+)/.exec(await hwOut);
	check(mw !== null && Number(mw[3]) < 4000, 'redis://: a holdfast waiter got it after node released (waited ' + (mw && mw[3]) + ' ms)');
	check(await new Promise((res) => hw.on('exit', res)) === 0, 'redis://: the waiter released');

	if (holdfastd)
		await lockRoute();
	else
		console.log('skipped: holdfastd\'s lock route (no holdfastd given)');

	for (const c of clients) c.disconnect();
	console.log('npm interop: ' + checks + ' checks passed');
}

// 6. holdfastd --engine redlock://...: its lock route takes the Redlock key lock:KEY.
async function lockRoute() {
	const srv = spawn(holdfastd, ['--listen', '127.0.0.1:0', '--engine', url],
	                  { stdio: ['ignore', 'ignore', 'pipe'] });
	let log = '';
	const port = await new Promise((res, rej) => {
		srv.stderr.on('data', (d) => {
			log += d;
			const m = /msg=listening.* port=(\d+)/.exec(log);
			if (m) res(Number(m[1]));
		});
		srv.on('exit', (c) => rej(new Error('holdfastd exited (' + c + '): ' + log)));
	});
	const post = async (path, body) => {
		const r = await fetch('http://127.0.0.1:' + port + path, {
			method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
		return { status: r.status, body: await r.json() };
	};
	try {
		let r = await post('/v1/locks/interop-h', { owner: 'route', ttl_ms: 10000 });
		check(r.status === 201, 'route: holdfastd takes lock interop-h on redlock:// (' + r.status + ' ' + JSON.stringify(r.body) + ')');
		const hold = r.body;
		let on = 0;
		for (const c of clients)
			on += (await c.get('lock:interop-h')) === hold.token ? 1 : 0;
		check(on >= 2, 'route: the Redlock key lock:interop-h holds its token on a majority (' + on + ' of 3)');
		check(await nodeCannot(redlock, 'lock:interop-h'), 'route: node redlock refuses lock:interop-h while holdfastd holds it');
		r = await post('/v1/holds/' + hold.id + '/release', { token: hold.token });
		check(r.status === 200, 'route: released through the hold route (' + r.status + ')');
		const n = await redlock.acquire(['lock:interop-h'], 10000);
		check(true, 'route: node takes lock:interop-h after holdfastd released it');
		r = await post('/v1/locks/interop-h', { owner: 'route', ttl_ms: 10000 });
		check(r.status === 409 && r.body.error.code === 'unavailable',
		      'route: holdfastd refuses lock interop-h while node holds lock:interop-h (' + r.status + ' ' + JSON.stringify(r.body) + ')');
		await n.release();
		r = await post('/v1/locks/interop-h', { owner: 'route', ttl_ms: 10000, wait_ms: 3000 });
		check(r.status === 201, 'route: after node released, holdfastd takes it (' + r.status + ')');
		check((await post('/v1/holds/' + r.body.id + '/release', { token: r.body.token })).status === 200,
		      'route: and releases it');
		r = await post('/v1/locks/interop-h', { owner: 'route', mode: 'shared' });
		check(r.status === 501 && r.body.error.code === 'not_supported' && /shared/.test(r.body.error.message),
		      'route: a shared lock on redlock:// is refused with the reason (' + r.status + ' ' + JSON.stringify(r.body) + ')');
	} finally {
		srv.kill('SIGTERM');
		await new Promise((res) => srv.on('exit', res));
	}
}

main().catch((e) => {
	console.error('FAIL: ' + (e && e.stack || e));
	process.exit(1);
});
