#!/usr/bin/env bash
# tern vs HAProxy vs nginx in one run: bench/run.sh [path/to/tern] [options]
#
#   bench/run.sh build/lb/tern            full run (3 rounds, ~6-8 minutes)
#   bench/run.sh build/lb/tern --quick    one short round (~2 minutes)
#   bench/run.sh --help                   every option
#
# Writes bench/RESULTS.md and prints the summary table. Everything listens on
# 127.0.0.1 on free high ports and runs as children of this script; they are
# stopped by PID when it ends. See bench/README.md.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

for tool in wrk haproxy nginx cc; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "bench: '$tool' not found; 'scripts/deps.sh all' installs the benchmark tools" >&2
        exit 1
    fi
done

py="$(command -v python3 || true)"
[ -x /usr/bin/python3 ] && py=/usr/bin/python3
if [ -z "$py" ]; then
    echo "bench: python3 not found" >&2
    exit 1
fi

# 10,000 idle connections need that many descriptors in the client and in
# each proxy: take the hard limit (the driver and its children inherit it).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# The Python driver owns every child process and stops them by PID on exit,
# error or signal; exec so that a signal sent to this script reaches it.
exec "$py" "$here/bench.py" "$@"
