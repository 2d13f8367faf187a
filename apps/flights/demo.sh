#!/bin/sh
# apps/flights/demo.sh — the seed 002 flight booking end to end: builds holdfastd and
# holdfast-flights, starts them on free loopback ports (holdfastd over a throw-away file:
# store), registers the flight_booking saga type, opens a flight, books a seat (happy path),
# tries another with a declined card and a third with a customer too slow to pay for the
# seat's lease, and shows what became of each. Everything is
# stopped and removed on exit; --keep serves on until Ctrl-C.
# Usage: apps/flights/demo.sh [--keep]
set -eu
keep=${1:-}
cd "$(dirname "$0")/../.."
root=$PWD
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j2 --target holdfastd holdfast-flights >/dev/null
dir=$(mktemp -d "${TMPDIR:-/tmp}/flights-demo.XXXXXX")
pids=
cleanup() {
	for p in $pids; do kill "$p" 2>/dev/null || true; done
	for p in $pids; do wait "$p" 2>/dev/null || true; done
	rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# wait_log FILE REGEX: prints the first match's port once the line is there.
wait_log() {
	i=0
	while ! grep -Eo "$2" "$1" >/dev/null 2>&1; do
		i=$((i + 1))
		[ $i -lt 300 ] || { cat "$1" >&2; echo "demo: $1 did not start" >&2; exit 1; }
		sleep 0.05
	done
	grep -Eo "$2" "$1" | head -n 1 | grep -Eo '[0-9]+$'
}
show() { python3 -m json.tool --compact 2>/dev/null || cat; }
call() { curl -sS -X "$1" "$2" ${3:+-H 'Content-Type: application/json' -d "$3"} ${4:+-H "Idempotency-Key: $4"}; }

"$root/build/src/server/holdfastd" --listen 127.0.0.1:0 --engine "file:$dir/holdfast.db" \
	--log-level warn >"$dir/holdfastd.log" 2>&1 &
pids="$pids $!"
HF=http://127.0.0.1:$(wait_log "$dir/holdfastd.log" 'msg=listening addr=[^ ]+ port=[0-9]+')
"$root/build/apps/flights/holdfast-flights" --listen 127.0.0.1:0 --holdfast "$HF" \
	--decline 4000000000000002 >"$dir/flights.log" 2>&1 &
pids="$pids $!"
FL=http://127.0.0.1:$(wait_log "$dir/flights.log" 'listening on http://[^ ]+:[0-9]+')
echo "holdfastd on $HF, the flight services on $FL"

echo "== the saga type (apps/flights/flight_booking.json)"
status=$(curl -sS -o "$dir/type.json" -w '%{http_code}' -X PUT -H 'Content-Type: application/json' \
	--data-binary "@$root/apps/flights/flight_booking.json" "$HF/v1/saga-types/flight_booking")
show <"$dir/type.json" | cut -c1-200
if [ "$status" = 404 ]; then
	echo "demo: this holdfastd has no saga orchestrator (404 on /v1/saga-types); the services" \
		"alone are on $FL" >&2
	exit 1
fi

echo "== a flight, Kyiv to Barcelona: 30 rows of A-F, 40 bags"
call POST "$FL/flights" '{"from":"KBP","to":"BCN","rows":30,"fare":12900,"bag_fee":2500,"baggage_units":40}' | show

# book SEAT CARD [SEAT_TTL_MS]: starts a booking saga, waits for its end, prints its story.
book() {
	input=$(printf '{"customer":"olena","flight":1,"seat":"%s","bags":2,"card":"%s","seat_ttl_ms":%s,"booking_url":"%s","flight_url":"%s","pricing_url":"%s","payment_url":"%s"}' \
		"$1" "$2" "${3:-900000}" "$FL" "$FL" "$FL" "$FL")
	id=$(call POST "$HF/v1/sagas" "{\"type\":\"flight_booking\",\"input\":$input}" "demo-$1" |
		python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
	while :; do
		call GET "$HF/v1/sagas/$id" >"$dir/saga.json"
		state=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["state"])' "$dir/saga.json")
		case $state in completed | failed | compensation_failed) break ;; esac
		sleep 0.1
	done
	echo "saga $id: $state"
	python3 - "$dir/saga.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
for t in s["timeline"]:
    if t["what"] != "started":
        print("  %-12s %-16s %-9s %.70s" % (t["phase"], t["step"], t["what"], t.get("detail") or ""))
if s.get("error"):
    print("  error: %(code)s" % s["error"])
PY
}

echo "== seat 12A, a good card: every step succeeds, the seat and bags are confirmed holds"
book 12A 4111111111111111
echo "== seat 14C, a card the payment service declines: C3, C2, C1 run, in that order"
book 14C 4000000000000002
echo "== seat 20F, a customer who takes 5 s to pay a seat leased for 2 s: the lease ends the saga;"
echo "   the payment still processing is voided (compensated first, by its key), then C3, C2, C1"
call POST "$FL/payment-rules" '{"card":"4111000000000099","hold_ms":5000}' >/dev/null
book 20F 4111000000000099 2000

echo "== the bookings"
call GET "$FL/bookings" | show
echo "== the payments"
call GET "$FL/payments" | show
echo "== holdfast: the live holds on flight 1 (12A and 2 bags, confirmed; 14C and 20F free)"
call GET "$HF/v1/holds?state=confirmed" | show
call GET "$HF/v1/holds?state=tentative" | show
call GET "$FL/baggage/1" | show

if [ "$keep" = --keep ]; then
	echo "serving on (holdfastd $HF, services $FL); Ctrl-C ends it"
	wait
fi
