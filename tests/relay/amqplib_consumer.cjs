// amqplib_consumer.cjs — reads relayed events with the npm `amqplib` client, to show that the
// relay's messages are ordinary AMQP: a queue bound to the topic exchange with a plain
// binding key, JSON bodies, message ids, headers, persistent delivery. Checks each message
// and prints one JSON line per message ({resource, revision, seq, messageId, routingKey});
// exits non-zero on the first bad message.
// Usage: node amqplib_consumer.cjs AMQP_URL EXCHANGE QUEUE BINDING IDLE_MS
// With IDLE_MS 0 it only declares the queue and its binding, and exits.
'use strict';
const amqp = require('amqplib');

const [url, exchange, queue, binding, idleMs] = process.argv.slice(2);

function fail(msg) {
	console.error('amqplib consumer: ' + msg);
	process.exit(1);
}

// The relay's routing key: type, then the resource with . % * # and non-printables encoded.
function routingKey(type, resource) {
	let enc = '';
	for (const b of Buffer.from(resource, 'utf8')) {
		const c = String.fromCharCode(b);
		enc += b > 0x20 && b < 0x7f && !'.%*#'.includes(c)
			? c : '%' + b.toString(16).toUpperCase().padStart(2, '0');
	}
	return type + '.' + enc;
}

async function main() {
	const conn = await amqp.connect(url);
	const ch = await conn.createChannel();
	await ch.assertExchange(exchange, 'topic', { durable: true });
	await ch.assertQueue(queue, { durable: true });
	await ch.bindQueue(queue, exchange, binding);
	if (Number(idleMs) === 0)
		return conn.close();
	await ch.prefetch(20);
	let last = Date.now();
	await ch.consume(queue, (m) => {
		const p = m.properties, h = p.headers || {};
		if (p.contentType !== 'application/json') fail('content type ' + p.contentType);
		if (p.deliveryMode !== 2) fail('delivery mode ' + p.deliveryMode);
		const ev = JSON.parse(m.content.toString('utf8'));
		const seq = Number(h.seq), rev = Number(h.revision), res = h.resource;
		if (ev.seq !== seq) fail('header seq ' + seq + ' but body seq ' + ev.seq);
		if (p.type !== ev.type) fail('type ' + p.type + ' but body type ' + ev.type);
		const id = rev > 0 ? res + '/' + rev : String(seq);
		if (p.messageId !== id) fail('message id ' + p.messageId + ', expected ' + id);
		if (m.fields.routingKey !== routingKey(ev.type, res))
			fail('routing key ' + m.fields.routingKey);
		console.log(JSON.stringify({ resource: res, revision: rev, seq, messageId: p.messageId,
			routingKey: m.fields.routingKey }));
		ch.ack(m);
		last = Date.now();
	});
	while (Date.now() - last < Number(idleMs))
		await new Promise((r) => setTimeout(r, 100));
	await ch.close();
	await conn.close();
}

main().catch((e) => fail(e.stack || String(e)));
