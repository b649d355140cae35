#!/bin/sh
# kleenenet end to end, in throwaway namespaces: a "host" where kleenenet runs and a fake upstream
# ("wan", 192.0.2.1) behind it. Creates a network, runs two containers that talk over TCP, shows
# that they reach the upstream through NAT, prints `network inspect`, then removes everything.
set -eu
. "$(dirname "$0")/as-root.sh"
cd "$(dirname "$0")/.."
./scripts/setup.sh

TAG=$$
HOST=kn-demo-h$TAG WAN=kn-demo-w$TAG
STATE=$(mktemp -d /tmp/kleenenet-demo.XXXXXX)
PY=$(pwd)/.venv/bin/python
kn() { KLEENENET_STATE_DIR=$STATE nsenter --net=/run/netns/$HOST "$PY" -m kleenenet "$@"; }
step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }

UPSTREAM_PID=""
cleanup() {
    kn rm -f web client >/dev/null 2>&1 || true
    [ -n "$UPSTREAM_PID" ] && kill "$UPSTREAM_PID" 2>/dev/null || true
    ip netns del "$HOST" 2>/dev/null || true
    ip netns del "$WAN" 2>/dev/null || true
    rm -rf "$STATE"
}
trap cleanup EXIT INT TERM

ip netns add "$HOST"; ip netns add "$WAN"
ip -n "$HOST" link add uplink type veth peer name wan0 netns "$WAN"
ip -n "$HOST" addr add 192.0.2.2/24 dev uplink; ip -n "$WAN" addr add 192.0.2.1/24 dev wan0
for ns in "$HOST" "$WAN"; do ip -n "$ns" link set lo up; done
ip -n "$HOST" link set uplink up; ip -n "$WAN" link set wan0 up
ip -n "$HOST" route add default via 192.0.2.1
# the fake upstream answers every connection with the address it sees
ip netns exec "$WAN" "$PY" -c '
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("192.0.2.1", 8080)); s.listen()
while True:
    c, a = s.accept(); c.sendall(("upstream saw " + a[0]).encode()); c.close()' &
UPSTREAM_PID=$!

step kleenenet network create --type bridge --subnet 10.2.3.0/24 testnet
kn network create --type bridge --subnet 10.2.3.0/24 testnet

step kleenenet run -d --name web -n testnet -- python3 '<a TCP server on port 80>'
kn run -d --name web -n testnet -- "$PY" -c '
import socket
s = socket.socket(); s.bind(("0.0.0.0", 80)); s.listen()
while True:
    c, a = s.accept(); c.sendall(("hello " + a[0] + ", this is web").encode()); c.close()'
sleep 0.3

step kleenenet run -d --name client -n testnet -- sleep 600
kn run -d --name client -n testnet -- sleep 600

CLIENT='import socket, sys
print(socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3).recv(200).decode())'
step kleenenet exec client -- python3 '<connect to web, 10.2.3.2:80>'
kn exec client -- "$PY" -c "$CLIENT" 10.2.3.2 80

step kleenenet exec client -- python3 '<connect to the upstream, 192.0.2.1:8080>'
kn exec client -- "$PY" -c "$CLIENT" 192.0.2.1 8080
echo "(192.0.2.2 is the host's uplink address: the containers reach the upstream through NAT)"

step kleenenet ps
kn ps

step kleenenet network inspect testnet
kn network inspect testnet

step kleenenet rm -f web client '&&' kleenenet network rm testnet
kn rm -f web client >/dev/null
kn network rm testnet >/dev/null
echo "done: no interfaces or firewall rules are left in the host namespace:"
ip -n "$HOST" -br link
