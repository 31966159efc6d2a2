#!/usr/bin/env bash
# Starts every server of this pool in the background and waits until each answers /v1/models.
# Logs: logs/<server>.log; stop with ./stop.sh. WAIT_S (default 900) bounds the wait.
set -euo pipefail
cd "$(dirname "$0")"
mkdir -p logs run
ollama create shared-coder-a \
  -f ollama/coder-a/Modelfile
ollama create shared-coder-b \
  -f ollama/coder-b/Modelfile
ollama create shared-judge \
  -f ollama/judge/Modelfile
for s in ; do
  nohup bash "servers/$s.sh" > "logs/$s.log" 2>&1 &
  echo $! > "run/$s.pid"
done
deadline=$((SECONDS + ${WAIT_S:-900}))
for port in ; do
  until curl -sf "http://127.0.0.1:$port/v1/models" > /dev/null; do
    if (( SECONDS > deadline )); then echo "port $port did not come up; see logs/" >&2; exit 1; fi
    sleep 2
  done
  echo "port $port is up"
done
