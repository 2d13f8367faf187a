# start_holdfastd.sh — sourced by shell tests: starts holdfastd on a free loopback port.
#   start_holdfastd HOLDFASTD ENGINE_URL LOG   sets $pid and $port (the caller stops $pid)
# The log file is created before the server starts: the redirection happens in the
# background child, so reading it right after `&` could otherwise find no file.
start_holdfastd() {
	local bin=$1 engine=$2 log=$3
	: >"$log"
	"$bin" --listen 127.0.0.1:0 --engine "$engine" >"$log" 2>&1 &
	pid=$!
	port=
	for _ in $(seq 1 300); do
		port=$(sed -n 's/.*msg=listening addr=[^ ]* port=\([0-9]*\).*/\1/p' "$log")
		[ -n "$port" ] && return 0
		kill -0 "$pid" 2>/dev/null || { cat "$log"; return 1; }
		sleep 0.05
	done
	echo "holdfastd did not start"
	cat "$log"
	return 1
}
