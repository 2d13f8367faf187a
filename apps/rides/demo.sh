#!/bin/sh
# apps/rides/demo.sh — holdfast-rides on 127.0.0.1:3000 with the demo data over throw-away
# PostgreSQL and Redis and a file: holdfast store (apps/common/demo.sh). Try the seed's curl
# examples; Ctrl-C ends it all. Usage: apps/rides/demo.sh [extra holdfast-rides options]
exec "$(dirname "$0")/../common/demo.sh" rides 3000 --demo-data "$@"
