#!/usr/bin/env bash
# The quick start: builds everything, starts the emulator (in memory) and two chat nodes
# scaled out over it, prints their addresses, and stops everything on Ctrl-C.
# Ports: EMULATOR_PORT (5300), CHAT_PORT_A (3001), CHAT_PORT_B (3002).
set -euo pipefail
cd "$(dirname "$0")/.."
emulator_port=${EMULATOR_PORT:-5300}
port_a=${CHAT_PORT_A:-3001}
port_b=${CHAT_PORT_B:-3002}

if [ ! -f demo/node_modules/socket.io-client/dist/socket.io.min.js ]; then
  echo "installing the Socket.IO browser client (npm ci in demo/)"
  (cd demo && npm ci --no-audit --no-fund --silent)
fi
cargo build --release --locked -p emulator -p demo --bin emulator --bin chat-node

pids=()
emulator=""
stop() {
  trap - INT TERM EXIT
  # The chat nodes first, so they can delete their subscriptions; then the emulator.
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ -n "$emulator" ]; then kill -TERM "$emulator" 2>/dev/null || true; wait "$emulator" 2>/dev/null || true; fi
  echo "stopped"
}
trap stop INT TERM EXIT

# Its own session, so that Ctrl-C reaches it only through stop(), after the chat nodes.
setsid target/release/emulator --in-memory --bind "127.0.0.1:${emulator_port}" --amqp-bind 127.0.0.1:0 >/dev/null &
emulator=$!
for _ in $(seq 1 100); do
  if (exec 3<>"/dev/tcp/127.0.0.1/${emulator_port}") 2>/dev/null; then break; fi
  sleep 0.1
done
export SERVICEBUS_CONNECTION_STRING="Endpoint=sb://127.0.0.1:${emulator_port};SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=SAS_KEY_VALUE;UseDevelopmentEmulator=true;"

target/release/chat-node --name A --bind "127.0.0.1:${port_a}" &
pids+=($!)
target/release/chat-node --name B --bind "127.0.0.1:${port_b}" &
pids+=($!)

echo
echo "emulator: http://127.0.0.1:${emulator_port}"
echo "chat node A: http://127.0.0.1:${port_a}"
echo "chat node B: http://127.0.0.1:${port_b}"
echo "open both pages; a message sent on one appears on the other. Ctrl-C stops everything."
wait -n "${pids[@]}" "$emulator"
