#!/usr/bin/env bash
# Stops the servers that start.sh started.
cd "$(dirname "$0")"
for f in run/*.pid; do [ -e "$f" ] && kill "$(cat "$f")" 2>/dev/null; rm -f "$f"; done
