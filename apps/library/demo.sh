#!/bin/sh
# apps/library/demo.sh — holdfast-library on 127.0.0.1:3002 over throw-away PostgreSQL and
# Redis and a file: holdfast store (apps/common/demo.sh); Ctrl-C ends it all.
# Usage: apps/library/demo.sh [extra holdfast-library options]
exec "$(dirname "$0")/../common/demo.sh" library 3002 "$@"
