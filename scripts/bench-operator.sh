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
# copes with an unpaginated listing). Needs oha (cargo install oha --locked), curl and
# python3.
set -euo pipefail
cd "$(dirname "$0")/.."
tenants=${BENCH_TENANTS:-20000}
seconds=${BENCH_SECONDS:-15}
port=${BENCH_PORT:-18083}
workers=${BENCH_WORKERS:-2}
source scripts/bench-node.sh
# A 64x64 RGB PNG, written by hand (stdlib only).
python3 - "$out/tiny.png" <<'EOF'
import struct, sys, zlib
w = h = 64
raw = b"".join(b"\0" + b"".join(bytes((x * 4, y * 4, 128)) for x in range(w)) for y in range(h))
def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)) \
    + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
open(sys.argv[1], "wb").write(png)
EOF
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
codes = ",".join(f"{k}:{v}" for k, v in d["statusCodeDistribution"].items())
print("%.2f %.2f %.0f %s" % (p["p50"] * 1000, p["p99"] * 1000, d["summary"]["requestsPerSec"], codes))' "$out/$1.json"
}

# The operator loop, until killed: list every page, one history, the month's totals.
cat >"$out/operator.py" <<'EOF'
import http.client, json, os, sys, urllib.parse
base, token, history_of, rounds_file = sys.argv[1:5]
host = urllib.parse.urlparse(base).netloc
def get(path):
    conn = http.client.HTTPConnection(host, timeout=60)
    conn.request("GET", path, headers={"authorization": f"Bearer {token}"})
    reply = conn.getresponse()
    data = reply.read()
    conn.close()
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
    with open(rounds_file + ".tmp", "w") as f:
        f.write(f"{rounds} {listed}\n")
    os.replace(rounds_file + ".tmp", rounds_file)
EOF

curl -fsS "$base/metrics" >"$out/metrics-before"
echo "tenants: $tenants; tiny resizes with 4 connections for ${seconds}s each"
read -r a50 a99 arps acodes < <(load alone)
echo "alone:              p50 ${a50} ms  p99 ${a99} ms  ${arps}/s  $acodes"
# At the lowest priority: an operator's client runs elsewhere; here it shares the two cores.
nice -n 19 python3 "$out/operator.py" "$base" "$token" "$history_of" "$out/rounds" &
looper=$!
sleep 1
read -r o50 o99 orps ocodes < <(load operator)
kill $looper 2>/dev/null || true
wait $looper 2>/dev/null || true
echo "with operator loop: p50 ${o50} ms  p99 ${o99} ms  ${orps}/s  $ocodes"
echo "operator rounds (tenants listed each): $(cat "$out/rounds" 2>/dev/null || echo none)"
python3 -c "print(f'p99 with / alone: {$o99/$a99:.1f}x')"
echo "lock holds during the two runs (node metrics, the setup's left out):"
curl -fsS "$base/metrics" >"$out/metrics-after"
python3 - "$out/metrics-before" "$out/metrics-after" <<'EOF'
import sys
def read(path):
    rows = [l for l in open(path) if l.startswith("tessera_node_lock_hold_seconds")]
    buckets = {}
    count = total = 0
    for l in rows:
        value = float(l.split()[-1])
        if "_bucket" in l:
            le = l.split('le="')[1].split('"')[0]
            buckets[float("inf") if le == "+Inf" else float(le)] = value
        elif l.startswith("tessera_node_lock_hold_seconds_count"):
            count = value
        elif l.startswith("tessera_node_lock_hold_seconds_sum"):
            total = value
    return buckets, count, total
before, after = read(sys.argv[1]), read(sys.argv[2])
if not after[0]:
    print("  (this node has no lock-hold histogram)")
    sys.exit()
buckets = sorted((le, c - before[0].get(le, 0)) for le, c in after[0].items())
count, total = after[1] - before[1], after[2] - before[2]
def quantile(q):
    return next(le for le, c in buckets if c >= q * count)
print(f"  holds {count:.0f}, mean {total / count * 1e6:.1f} us, p99 <= {quantile(0.99) * 1e6:.0f} us, "
      f"p99.9 <= {quantile(0.999) * 1e6:.0f} us, longest <= {quantile(1.0) * 1e6:.0f} us; "
      f"over 1 ms: {count - dict(buckets).get(0.001024, count):.0f}")
EOF
kill -TERM $server; wait $server || true
