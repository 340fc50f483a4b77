#!/usr/bin/env bash
# What an operator's reads cost the request path (issue #15): one node with
# $BENCH_TENANTS tenants (20,000; each created, then given a quota edit, so the directory
# log holds 40,000 ops), closed-loop tiny resizes (a 64x64 PNG, billed with a tenant key)
# measured alone and then while an operator loop lists every tenant, reads one tenant's
# history and exports the month's totals, over and over. Prints p50/p99 of the resizes
# both ways, the operator loop's rounds, and the node's lock-hold histogram (where the
# node has one: `tessera_node_lock_hold_seconds`).
#
#   scripts/bench-operator.sh
#
# To compare with an older commit, run this script from a checkout of it (the script
# copes with an unpaginated listing). Needs oha (cargo install oha --locked), curl,
# python3 and ImageMagick's convert.
set -euo pipefail
cd "$(dirname "$0")/.."
tenants=${BENCH_TENANTS:-20000}
seconds=${BENCH_SECONDS:-15}
port=${BENCH_PORT:-18083}
workers=${BENCH_WORKERS:-2}
source scripts/bench-node.sh
convert -size 64x64 xc:steelblue "$out/tiny.png"
base="http://127.0.0.1:$port"

# Tenants, their quota edits, and one key for the load (8 connections: group commit).
python3 - "$base" "$token" "$tenants" >"$out/setup.json" <<'EOF'
import http.client, json, sys, threading, urllib.parse
base, token, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
host = urllib.parse.urlparse(base).netloc
ids = []
lock = threading.Lock()
def call(conn, method, path, body=None):
    conn.request(method, path, json.dumps(body) if body is not None else None,
                 {"authorization": f"Bearer {token}", "content-type": "application/json"})
    reply = conn.getresponse()
    data = reply.read()
    assert reply.status < 300, (reply.status, data)
    return json.loads(data) if data else None
def work(start):
    conn = http.client.HTTPConnection(host)
    for i in range(start, count, 8):
        tenant = call(conn, "POST", "/admin/v1/tenants", {"name": f"tenant-{i}"})["id"]
        call(conn, "PUT", f"/admin/v1/tenants/{tenant}/quotas/requests/month", {"limit": 1000000000})
        with lock:
            ids.append(tenant)
threads = [threading.Thread(target=work, args=(s,)) for s in range(8)]
for t in threads: t.start()
for t in threads: t.join()
conn = http.client.HTTPConnection(host)
key = call(conn, "POST", f"/admin/v1/tenants/{ids[0]}/keys", {"scopes": "resize"})["key"]
print(json.dumps({"key": key, "tenant": ids[0], "history_of": ids[len(ids) // 2]}))
EOF
key=$(jget key <"$out/setup.json")
history_of=$(jget history_of <"$out/setup.json")

load() { # NAME → p50 p99 (ms) and status codes
  oha --no-tui --output-format json -m POST -D "$out/tiny.png" -T image/png \
    -H "Authorization: Bearer $key" -c 4 -z "${seconds}s" \
    "$base/v1/resize?w=32&format=png" >"$out/$1.json" 2>/dev/null
  python3 -c '
import json,sys
d=json.load(open(sys.argv[1]))
p=d["latencyPercentiles"]
print(f"{p[\"p50\"]*1000:.2f} {p[\"p99\"]*1000:.2f} {d[\"summary\"][\"requestsPerSec\"]:.0f} {d[\"statusCodeDistribution\"]}")' "$out/$1.json"
}

operator_loop() { # until killed: list every page, one history, the month's totals
  python3 - "$base" "$token" "$history_of" "$out/rounds" <<'EOF'
import http.client, json, sys, urllib.parse
base, token, history_of, rounds_file = sys.argv[1:5]
conn = http.client.HTTPConnection(urllib.parse.urlparse(base).netloc)
def get(path):
    conn.request("GET", path, headers={"authorization": f"Bearer {token}"})
    reply = conn.getresponse()
    data = reply.read()
    assert reply.status == 200, (path, reply.status, data[:200])
    return data
rounds = 0
while True:
    after, listed = None, 0
    while True:
        page = json.loads(get("/admin/v1/tenants" + (f"?after={after}" if after else "")))
        listed += len(page["tenants"])
        after = page.get("next")
        if not after:
            break
    get(f"/admin/v1/tenants/{history_of}/history")
    get("/admin/v1/export/totals")
    rounds += 1
    with open(rounds_file, "w") as f:
        f.write(f"{rounds} {listed}\n")
EOF
}

echo "tenants: $tenants; tiny resizes with 4 connections for ${seconds}s each"
read -r a50 a99 arps acodes < <(load alone)
echo "alone:              p50 ${a50} ms  p99 ${a99} ms  ${arps}/s  $acodes"
operator_loop &
looper=$!
sleep 1
read -r o50 o99 orps ocodes < <(load operator)
kill $looper 2>/dev/null || true
wait $looper 2>/dev/null || true
echo "with operator loop: p50 ${o50} ms  p99 ${o99} ms  ${orps}/s  $ocodes"
echo "operator rounds (tenants listed each): $(cat "$out/rounds" 2>/dev/null || echo none)"
python3 -c "print(f'p99 with / alone: {$o99/$a99:.1f}x')"
echo "lock holds (node metrics):"
curl -fsS "$base/metrics" | python3 -c '
import sys
rows = [l for l in sys.stdin if l.startswith("tessera_node_lock_hold_seconds")]
if not rows:
    print("  (this node has no lock-hold histogram)")
buckets = [(float(l.split("le=\"")[1].split("\"")[0]) if "+Inf" not in l else float("inf"), int(float(l.split()[-1])))
           for l in rows if "_bucket" in l]
count = next((int(float(l.split()[-1])) for l in rows if l.startswith("tessera_node_lock_hold_seconds_count")), 0)
total = next((float(l.split()[-1]) for l in rows if l.startswith("tessera_node_lock_hold_seconds_sum")), 0.0)
if count:
    def quantile(q):
        for le, c in buckets:
            if c >= q * count:
                return le
    print(f"  holds {count}, mean {total / count * 1e6:.1f} us, p99 <= {quantile(0.99) * 1e6:.0f} us, "
          f"p99.9 <= {quantile(0.999) * 1e6:.0f} us, longest <= {quantile(1.0) * 1e6:.0f} us")
'
kill -TERM $server; wait $server || true
