#!/usr/bin/env bash
# Upload benchmark: `lifeguard-agent archive --upload` (archive built with parallel gzip members
# and streamed into an S3 multipart upload while it is being built) against what operators'
# scripts do, `tar czf` followed by an S3 upload of the finished file with boto3's upload_file
# (the s3transfer engine behind `aws s3 cp`: multipart, 8 MiB parts, 10 threads). Both go to the
# local AWS emulator (tests/emulator), never to AWS. Each phase runs under /usr/bin/time: wall
# time, user+sys CPU, peak resident memory; the table also gives the compressed size.
#
#   scripts/bench/upload-bench.sh [SIZE_MB] [--runs N] [--json]
#
# SIZE_MB (default 512) picks the corpus $HOME/.cache/lifeguard/bench-corpus-SIZE_MB, generated
# by gen-corpus.py when missing. --runs N repeats baseline then lifeguard N times and reports the
# median of each figure. --json prints the results as JSON on stdout (the table then goes to
# stderr). LIFEGUARD_AGENT_BIN selects another agent build; by default the release build is made
# with cargo (CARGO_TARGET_DIR defaults to $HOME/.cache/lifeguard/target).
#
# The agent runs with its defaults unless the config below says otherwise: [archive] gzip,
# level 6, threads 0 (every core); [upload] part_size_mib 8, concurrency 2, checksum crc32c.
# The script starts its own emulator on a free port and stops it on exit. The emulator shares
# the machine's cores with whatever is measured, so its own CPU time is shown as well, and so is
# "other CPU", the machine's busy time beyond the command and the emulator: when it is more
# than a fraction of a second, something else was running and the figures are suspect. "steal"
# is CPU time the hypervisor took from this VM (a shared host): it stretches wall times too.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"

size_mb=512
runs=1
json=false
while (($#)); do
    case "$1" in
        --runs)
            runs="${2:?--runs needs a number}"
            shift 2
            ;;
        --json)
            json=true
            shift
            ;;
        -h | --help)
            sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
            exit 0
            ;;
        *)
            size_mb="$1"
            shift
            ;;
    esac
done
if ! [[ "$size_mb" =~ ^[0-9]+$ && "$runs" =~ ^[1-9][0-9]*$ ]]; then
    echo "upload-bench: SIZE_MB and --runs must be positive integers" >&2
    exit 2
fi
corpus="$HOME/.cache/lifeguard/bench-corpus-$size_mb"

if [[ ! -x /usr/bin/time ]]; then
    echo "upload-bench: /usr/bin/time is needed (package \`time\`)" >&2
    exit 1
fi
if [[ ! -d "$corpus" ]]; then
    echo "upload-bench: generating a $size_mb MB corpus in $corpus" >&2
    python3 "$here/gen-corpus.py" "$corpus" "$size_mb"
fi

bin="${LIFEGUARD_AGENT_BIN:-}"
if [[ -z "$bin" ]]; then
    export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/lifeguard/target}"
    echo "upload-bench: cargo build --release -p lifeguard-agent" >&2
    (cd "$repo" && cargo build --release -p lifeguard-agent >&2)
    bin="$CARGO_TARGET_DIR/release/lifeguard-agent"
fi
if [[ ! -x "$bin" ]]; then
    echo "upload-bench: no agent binary at $bin" >&2
    exit 1
fi

# shellcheck source=scripts/bench/lib.sh
source "$here/lib.sh"
bench_init upload-bench
start_emulator
bucket=bench-logs
export BENCH_ENDPOINT="$endpoint" BENCH_BUCKET="$bucket"

# Shared by the helpers below: clients for the emulator (S3 path-style, as the README asks).
cat >"$work/clients.py" <<'EOF'
import os
import boto3
from botocore.config import Config

ENDPOINT = os.environ["BENCH_ENDPOINT"]
BUCKET = os.environ["BENCH_BUCKET"]


def client(service):
    return boto3.client(service, endpoint_url=ENDPOINT, region_name="us-east-1",
                        config=Config(s3={"addressing_style": "path"}))
EOF

# A plain EC2 instance is enough: `archive --upload` only reads its id from IMDS, and the
# config names the group, so no Auto Scaling lookup happens.
instance_id="$(PYTHONPATH="$work" "$py" - <<'EOF'
from clients import client, BUCKET
ec2 = client("ec2")
image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
reservation = ec2.run_instances(ImageId=image, InstanceType="t3.micro", MinCount=1, MaxCount=1)
client("s3").create_bucket(Bucket=BUCKET)
print(reservation["Instances"][0]["InstanceId"])
EOF
)"

# The baseline's upload: what `aws s3 cp FILE s3://...` does, through boto3's defaults
# (multipart above 8 MiB, 8 MiB parts, 10 threads, CRC32 checksums).
cat >"$work/s3put.py" <<'EOF'
import sys
from clients import client, BUCKET
client("s3").upload_file(sys.argv[1], BUCKET, sys.argv[2])
EOF

# Checks the agent's object against what it printed, then removes what a run left so that
# the emulator does not hold every run's objects in memory. Prints the SHA-256 it computed.
cat >"$work/verify.py" <<'EOF'
import hashlib
import sys
from clients import client, BUCKET
key, want_sha, want_bytes, baseline_key, baseline_bytes = sys.argv[1:6]
s3 = client("s3")
body = s3.get_object(Bucket=BUCKET, Key=key)["Body"]
digest, size = hashlib.sha256(), 0
for chunk in iter(lambda: body.read(8 << 20), b""):
    digest.update(chunk)
    size += len(chunk)
problems = []
if digest.hexdigest() != want_sha:
    problems.append(f"sha256 {digest.hexdigest()} != printed {want_sha}")
if size != int(want_bytes):
    problems.append(f"{size} bytes downloaded != {want_bytes} printed")
s3.head_object(Bucket=BUCKET, Key=key + ".manifest.json")
if s3.head_object(Bucket=BUCKET, Key=baseline_key)["ContentLength"] != int(baseline_bytes):
    problems.append("the baseline object's size differs from its file")
uploads = s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", [])
if uploads:
    problems.append(f"{len(uploads)} multipart upload(s) left in progress")
for k in (key, key + ".manifest.json", baseline_key):
    s3.delete_object(Bucket=BUCKET, Key=k)
if problems:
    sys.exit("verification failed: " + "; ".join(problems))
print(digest.hexdigest())
EOF

# What the emulator spent on S3 calls since a sequence number, per action: with the emulator's
# wall time per call this shows whether the upload waited on the network side or the archiver.
cat >"$work/s3calls.py" <<'EOF'
import collections
import json
import sys
import urllib.request
from clients import ENDPOINT
since = sys.argv[1]
with urllib.request.urlopen(f"{ENDPOINT}/_lifeguard/calls?service=s3&since={since}") as answer:
    calls = json.load(answer)["calls"]
per_action = collections.defaultdict(lambda: [0, 0.0])
for call in calls:
    per_action[call["action"]][0] += 1
    per_action[call["action"]][1] += (call["duration_ms"] or 0) / 1000
print(json.dumps({a: {"calls": n, "served_s": round(s, 2)} for a, (n, s) in per_action.items()}))
EOF

last_seq() {
    "$py" -c 'import json, sys, urllib.request
with urllib.request.urlopen(sys.argv[1] + "/_lifeguard/calls?limit=1") as a:
    calls = json.load(a)["calls"]
print(calls[-1]["seq"] if calls else 0)' "$endpoint"
}

cat >"$work/agent.toml" <<EOF
[aws]
region = "us-east-1"
endpoint_url = "$endpoint"

[imds]
base_url = "$endpoint/_imds/$instance_id"

[instance]
asg = "bench"

[archive]
paths = ["$corpus"]

[upload]
bucket = "$bucket"

[state]
path = "$work/state/agent-state.json"
EOF

# utime+stime of a process in clock ticks (fields 14 and 15 of /proc/PID/stat, counted after
# the parenthesised command name, which may hold spaces).
ticks() {
    local stat
    stat="$(<"/proc/$1/stat")"
    stat="${stat##*) }"
    # shellcheck disable=SC2086 # split into fields on purpose
    set -- $stat
    echo $((${12} + ${13}))
}
clk_tck="$(getconf CLK_TCK)"

# Clock ticks of the whole machine from the first line of /proc/stat: busy (user, nice, system,
# irq, softirq; what is left after the command and the emulator is other load) and steal (time
# the hypervisor gave this VM's CPUs to someone else, which stretches wall times but shows in
# no process's CPU time).
machine_ticks() {
    local _cpu user nice system _idle _iowait irq softirq steal _rest
    read -r _cpu user nice system _idle _iowait irq softirq steal _rest </proc/stat
    echo "$((user + nice + system + irq + softirq)) $steal"
}

# timed NAME COMMAND...: runs COMMAND under /usr/bin/time, stdout to $work/NAME.out; appends
# "wall cpu rss_kib emulator_cpu other_cpu steal" to $work/NAME.times.
timed() {
    local name="$1"
    shift
    local before after busy_before steal_before busy_after steal_after
    read -r busy_before steal_before < <(machine_ticks)
    before="$(ticks "$emulator_pid")"
    if ! /usr/bin/time -f "%e %U %S %M" -o "$work/time" "$@" >"$work/$name.out" 2>"$work/$name.err"; then
        echo "upload-bench: $name failed:" >&2
        cat "$work/$name.err" "$work/time" >&2
        exit 1
    fi
    after="$(ticks "$emulator_pid")"
    read -r busy_after steal_after < <(machine_ticks)
    read -r wall user sys rss <"$work/time"
    awk -v w="$wall" -v u="$user" -v s="$sys" -v r="$rss" -v e="$((after - before))" \
        -v m="$((busy_after - busy_before))" -v st="$((steal_after - steal_before))" -v hz="$clk_tck" \
        'BEGIN { o = m / hz - (u + s) - e / hz; if (o < 0) o = 0
                 printf "%s %.2f %d %.2f %.2f %.2f\n", w, u + s, r, e / hz, o, st / hz }' >>"$work/$name.times"
}

echo "upload-bench: corpus $corpus, emulator $endpoint, instance $instance_id" >&2
load_before="$(cut -d' ' -f1-3 /proc/loadavg)"
# Both contenders start from the page cache, so neither pays for the disk read alone.
find "$corpus" -type f -exec cat {} + >/dev/null

parent="$(dirname "$corpus")"
base="$(basename "$corpus")"
for run in $(seq "$runs"); do
    echo "upload-bench: run $run/$runs: tar czf" >&2
    timed tar tar czf "$work/base.tar.gz" -C "$parent" "$base"
    stat -c %s "$work/base.tar.gz" >>"$work/tar.bytes"
    echo "upload-bench: run $run/$runs: boto3 upload_file" >&2
    timed put env PYTHONPATH="$work" "$py" "$work/s3put.py" "$work/base.tar.gz" "baseline/run-$run.tar.gz"
    rm -f "$work/base.tar.gz"

    echo "upload-bench: run $run/$runs: lifeguard-agent archive --upload" >&2
    seq0="$(last_seq)"
    timed agent "$bin" --config "$work/agent.toml" archive --upload
    PYTHONPATH="$work" "$py" "$work/s3calls.py" "$seq0" >>"$work/agent.s3calls"
    # s3://bucket/key: N bytes, sha256 HEX, F files, S skipped
    printed="$(tail -n 1 "$work/agent.out")"
    echo "upload-bench: agent printed: $printed" >&2
    if ! [[ "$printed" =~ ^s3://$bucket/([^:]+):\ ([0-9]+)\ bytes,\ sha256\ ([0-9a-f]{64}), ]]; then
        echo "upload-bench: unexpected agent output: $printed" >&2
        exit 1
    fi
    key="${BASH_REMATCH[1]}" agent_bytes="${BASH_REMATCH[2]}" agent_sha="${BASH_REMATCH[3]}"
    echo "$agent_bytes" >>"$work/agent.bytes"
    PYTHONPATH="$work" "$py" "$work/verify.py" "$key" "$agent_sha" "$agent_bytes" \
        "baseline/run-$run.tar.gz" "$(tail -n 1 "$work/tar.bytes")" >/dev/null
    echo "upload-bench: run $run/$runs: verified (sha256 matches, no multipart upload left)" >&2
done
load_after="$(cut -d' ' -f1-3 /proc/loadavg)"

RUNS="$runs" NPROC="$(nproc)" CORPUS="$corpus" LOAD_BEFORE="$load_before" LOAD_AFTER="$load_after" \
    JSON="$json" python3 - "$work" <<'EOF'
import json
import os
import statistics
import sys

work = sys.argv[1]


def rows(name):
    with open(os.path.join(work, name)) as f:
        return [[float(x) for x in line.split()] for line in f if line.strip()]


tar, put, agent = rows("tar.times"), rows("put.times"), rows("agent.times")
tar_bytes = [r[0] for r in rows("tar.bytes")]
agent_bytes = [r[0] for r in rows("agent.bytes")]
# Each run's baseline is its two phases back to back: times add up, the peak is the larger.
total = [[t[0] + p[0], t[1] + p[1], max(t[2], p[2]), t[3] + p[3], t[4] + p[4], t[5] + p[5]]
         for t, p in zip(tar, put)]


def summary(times, sizes):
    med = lambda i: round(statistics.median(r[i] for r in times), 3)
    out = {"wall_s": med(0), "cpu_s": med(1), "peak_rss_mib": round(med(2) / 1024, 1),
           "emulator_cpu_s": med(3), "other_cpu_s": med(4), "steal_s": med(5)}
    if sizes is not None:
        out["bytes"] = int(statistics.median(sizes))
    return out


result = {
    "corpus": os.environ["CORPUS"],
    "corpus_bytes": sum(os.path.getsize(os.path.join(d, f))
                        for d, _, fs in os.walk(os.environ["CORPUS"]) for f in fs),
    "cpus": int(os.environ["NPROC"]),
    "runs": int(os.environ["RUNS"]),
    "loadavg_before": os.environ["LOAD_BEFORE"],
    "loadavg_after": os.environ["LOAD_AFTER"],
    "baseline_tar": summary(tar, tar_bytes),
    "baseline_upload": summary(put, None),
    "baseline": summary(total, tar_bytes),
    "lifeguard": summary(agent, agent_bytes),
}
with open(os.path.join(work, "agent.s3calls")) as f:
    result["lifeguard_s3_calls_last_run"] = json.loads(f.read().splitlines()[-1])
# The spread matters on a shared machine: a median of 3 hides one disturbed run, not three.
result["wall_s_per_run"] = {"baseline": [round(r[0], 3) for r in total],
                            "lifeguard": [round(r[0], 3) for r in agent]}
b, l = result["baseline"], result["lifeguard"]
result["baseline_over_lifeguard_wall"] = round(b["wall_s"] / l["wall_s"], 3)
result["lifeguard_over_baseline_size"] = round(l["bytes"] / b["bytes"], 4)

table = sys.stdout
if os.environ["JSON"] == "true":
    json.dump(result, sys.stdout, indent=2)
    print()
    table = sys.stderr
print(f"corpus: {result['corpus']} ({result['corpus_bytes']} bytes), {result['cpus']} CPUs, "
      f"median of {result['runs']} run(s); load average {result['loadavg_before']} before, "
      f"{result['loadavg_after']} after", file=table)
print(f"{'':34} {'wall s':>7} {'CPU s':>7} {'RSS MiB':>8} {'bytes':>11} {'emulator CPU s':>15} "
      f"{'other CPU s':>12} {'steal s':>8}", file=table)
for label, key in [("baseline: tar czf", "baseline_tar"),
                   ("baseline: boto3 upload_file", "baseline_upload"),
                   ("baseline total", "baseline"),
                   ("lifeguard-agent archive --upload", "lifeguard")]:
    r = result[key]
    size = str(r["bytes"]) if "bytes" in r else ""
    print(f"{label:34} {r['wall_s']:7.2f} {r['cpu_s']:7.2f} {r['peak_rss_mib']:8.1f} {size:>11} "
          f"{r['emulator_cpu_s']:15.2f} {r['other_cpu_s']:12.2f} {r['steal_s']:8.2f}", file=table)
print(f"baseline/lifeguard wall: {result['baseline_over_lifeguard_wall']:.2f}x; "
      f"lifeguard/baseline size: {result['lifeguard_over_baseline_size']:.3f}", file=table)
print("wall s per run: baseline " + ", ".join(f"{w:.2f}" for w in result["wall_s_per_run"]["baseline"])
      + "; lifeguard " + ", ".join(f"{w:.2f}" for w in result["wall_s_per_run"]["lifeguard"]),
      file=table)
calls = ", ".join(f"{a} {v['calls']}x {v['served_s']} s"
                  for a, v in sorted(result["lifeguard_s3_calls_last_run"].items()))
print(f"emulator time serving the agent's S3 calls (last run): {calls}", file=table)
EOF
