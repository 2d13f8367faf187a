#!/bin/sh
# apps/shop/demo.sh — holdfast-shop on 127.0.0.1:3001 over a throw-away PostgreSQL and a
# file: holdfast store (apps/common/demo.sh); Ctrl-C ends it all.
# Usage: apps/shop/demo.sh [extra holdfast-shop options]
exec "$(dirname "$0")/../common/demo.sh" shop 3001 "$@"
