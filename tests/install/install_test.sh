#!/usr/bin/env bash
# install_test.sh BUILD_DIR SOURCE_DIR — installs the build into a temporary prefix and builds
# a program against it with pkg-config, against the static library (with the shared
# libraries of its dependencies) and the shared one; both must run.
set -euo pipefail
build=$1 src=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cmake --install "$build" --prefix "$tmp/prefix" >/dev/null
pc_dir=$(dirname "$(find "$tmp/prefix" -name holdfast.pc | head -n 1)")
export PKG_CONFIG_PATH=$pc_dir
cc=${CC:-cc}
# shellcheck disable=SC2046
$cc -std=c17 -Wall -Werror "$src/tests/install/consumer.c" -o "$tmp/dynamic" \
	$(pkg-config --cflags --libs holdfast)
# shellcheck disable=SC2046
$cc -std=c17 -Wall -Werror "$src/tests/install/consumer.c" -o "$tmp/static" \
	$(pkg-config --cflags holdfast) "$(pkg-config --variable=libdir holdfast)/libholdfast.a" \
	$(pkg-config --libs $(pkg-config --print-requires-private holdfast)) -lpthread
LD_LIBRARY_PATH="$(pkg-config --variable=libdir holdfast)" "$tmp/dynamic" "file:$tmp/d.db"
"$tmp/static" "file:$tmp/s.db"
echo "install: header, libraries and holdfast.pc work"
