#!/usr/bin/env bash
# Idle footprint of the agent: `lifeguard-agent run` (release build) watching an InService
# instance of an Auto Scaling group in the local AWS emulator (tests/emulator), polling IMDS
# every second with nothing to drain. After a warm-up it samples /proc/PID/status (VmRSS,
# VmHWM) once a second and /proc/PID/stat (utime+stime) at both ends of the window, then reports
# resident memory (mean, max), peak (VmHWM), CPU as a percentage of one core, and the IMDS
# requests the emulator served for the instance in the window, to show the polling really
# happened. Finally it stops the agent with SIGTERM and checks that it exits 0.
#
#   scripts/bench/idle-agent.sh [SECONDS]
#
# SECONDS is the sampling window (default 60); WARMUP_SECS (default 10) the time before it.
# LIFEGUARD_AGENT_BIN selects another agent build; by default the release build is made with
# cargo (CARGO_TARGET_DIR defaults to $HOME/.cache/lifeguard/target). The script starts its own
# emulator on a free port and stops it on exit.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
window="${1:-60}"
warmup="${WARMUP_SECS:-10}"
if ! [[ "$window" =~ ^[1-9][0-9]*$ && "$warmup" =~ ^[0-9]+$ ]]; then
    echo "idle-agent: SECONDS and WARMUP_SECS must be whole numbers" >&2
    exit 2
fi

bin="${LIFEGUARD_AGENT_BIN:-}"
if [[ -z "$bin" ]]; then
    export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/lifeguard/target}"
    echo "idle-agent: cargo build --release -p lifeguard-agent" >&2
    (cd "$repo" && cargo build --release -p lifeguard-agent >&2)
    bin="$CARGO_TARGET_DIR/release/lifeguard-agent"
fi
if [[ ! -x "$bin" ]]; then
    echo "idle-agent: no agent binary at $bin" >&2
    exit 1
fi

# shellcheck source=scripts/bench/lib.sh
source "$here/lib.sh"
bench_init idle-agent
start_emulator

# A group of one, as in production: the emulator launches the instance, which goes InService
# (no launch hook), so IMDS answers target-lifecycle-state InService like a real member.
instance_id="$(BENCH_ENDPOINT="$endpoint" "$py" - <<'EOF'
import os
import time
import boto3

def client(service):
    return boto3.client(service, endpoint_url=os.environ["BENCH_ENDPOINT"], region_name="us-east-1")

ec2, autoscaling = client("ec2"), client("autoscaling")
image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
template = ec2.create_launch_template(
    LaunchTemplateName="idle-bench",
    LaunchTemplateData={"ImageId": image, "InstanceType": "t3.micro"},
)["LaunchTemplate"]["LaunchTemplateId"]
autoscaling.create_auto_scaling_group(
    AutoScalingGroupName="idle-bench",
    LaunchTemplate={"LaunchTemplateId": template, "Version": "$Latest"},
    MinSize=0, MaxSize=2, DesiredCapacity=1, AvailabilityZones=["us-east-1a"],
)
for _ in range(100):
    group = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=["idle-bench"])
    members = [i for i in group["AutoScalingGroups"][0]["Instances"] if i["LifecycleState"] == "InService"]
    if members:
        print(members[0]["InstanceId"])
        break
    time.sleep(0.1)
else:
    raise SystemExit("the group's instance never went InService")
EOF
)"

# No [upload] and no [report]: nothing would be sent anywhere even if a drain started. The group
# is left for the agent to find, as it does by default.
cat >"$work/agent.toml" <<EOF
[aws]
region = "us-east-1"
endpoint_url = "$endpoint"

[imds]
base_url = "$endpoint/_imds/$instance_id"

[watch]
poll_interval_ms = 1000

[state]
path = "$work/state/agent-state.json"

[log]
format = "json"
level = "info"
EOF

"$bin" --config "$work/agent.toml" run </dev/null >"$work/agent.log" 2>&1 &
agent_pid=$!
bench_track "$agent_pid"
for _ in $(seq 300); do
    grep -q '"lifeguard-agent watching"' "$work/agent.log" && break
    if ! alive "$agent_pid"; then
        echo "idle-agent: the agent exited before watching:" >&2
        cat "$work/agent.log" >&2
        exit 1
    fi
    sleep 0.1
done
if ! grep -q '"lifeguard-agent watching"' "$work/agent.log"; then
    echo "idle-agent: the agent did not log \"lifeguard-agent watching\" within 30 s:" >&2
    cat "$work/agent.log" >&2
    exit 1
fi
echo "idle-agent: agent $agent_pid watching $instance_id via $endpoint; warm-up ${warmup} s, window ${window} s" >&2
sleep "$warmup"

# utime+stime in clock ticks: fields 14 and 15 of /proc/PID/stat, counted after the
# parenthesised command name (which may hold spaces).
ticks() {
    local stat
    stat="$(<"/proc/$1/stat")"
    stat="${stat##*) }"
    # shellcheck disable=SC2086 # split into fields on purpose
    set -- $stat
    echo $((${12} + ${13}))
}

# The newest call the emulator has recorded: the window counts the calls after it.
last_seq() {
    "$py" -c 'import json, sys, urllib.request
with urllib.request.urlopen(sys.argv[1] + "/_lifeguard/calls?limit=1") as a:
    calls = json.load(a)["calls"]
print(calls[-1]["seq"] if calls else 0)' "$endpoint"
}

load_before="$(cut -d' ' -f1-3 /proc/loadavg)"
seq0="$(last_seq)"
ticks0="$(ticks "$agent_pid")"
t0="$(date +%s.%N)"
: >"$work/samples"
for _ in $(seq "$window"); do
    sleep 1
    # Read with builtins only, so that sampling adds no process of its own to the machine.
    rss="" hwm=""
    while read -r field value _; do
        case "$field" in
            VmRSS:) rss="$value" ;;
            VmHWM:) hwm="$value" ;;
        esac
    done <"/proc/$agent_pid/status"
    echo "$rss $hwm" >>"$work/samples"
done
t1="$(date +%s.%N)"
ticks1="$(ticks "$agent_pid")"
threads="$(awk '/^Threads:/ { print $2 }' "/proc/$agent_pid/status")"
load_after="$(cut -d' ' -f1-3 /proc/loadavg)"

# The window's calls that name the instance: its IMDS requests and any AWS call about it.
calls_json="$("$py" -c 'import json, sys, urllib.request
url = f"{sys.argv[1]}/_lifeguard/calls?since={sys.argv[2]}&instance_id={sys.argv[3]}"
with urllib.request.urlopen(url) as a:
    print(json.dumps(json.load(a)["calls"]))' "$endpoint" "$seq0" "$instance_id")"

stop_child "$agent_pid" agent 10

CLK_TCK="$(getconf CLK_TCK)" TICKS="$((ticks1 - ticks0))" T0="$t0" T1="$t1" THREADS="$threads" \
    CALLS="$calls_json" EXIT_CODE="$exit_code" LOAD_BEFORE="$load_before" LOAD_AFTER="$load_after" \
    INSTANCE="$instance_id" NPROC="$(nproc)" python3 - "$work/samples" <<'EOF'
import collections
import json
import os
import sys

samples = [[int(x) for x in line.split()] for line in open(sys.argv[1]) if line.strip()]
rss = [s[0] / 1024 for s in samples]
hwm = max(s[1] for s in samples) / 1024
elapsed = float(os.environ["T1"]) - float(os.environ["T0"])
cpu_s = int(os.environ["TICKS"]) / int(os.environ["CLK_TCK"])
calls = json.loads(os.environ["CALLS"])
per_action = collections.Counter(f"{c['service']} {c['action']}" for c in calls)
imds = sum(n for a, n in per_action.items() if a.startswith("imds "))

print(f"instance {os.environ['INSTANCE']}, {os.environ['NPROC']} CPUs, load average "
      f"{os.environ['LOAD_BEFORE']} before, {os.environ['LOAD_AFTER']} after")
print(f"window: {elapsed:.1f} s, {len(samples)} samples, {os.environ['THREADS']} threads")
print(f"resident (VmRSS): mean {sum(rss) / len(rss):.2f} MiB, max {max(rss):.2f} MiB")
print(f"peak (VmHWM):     {hwm:.2f} MiB")
print(f"CPU:              {cpu_s:.2f} s user+sys = {100 * cpu_s / elapsed:.3f}% of one core")
print(f"IMDS requests:    {imds} ({imds / elapsed:.2f}/s)")
for action, n in sorted(per_action.items()):
    print(f"  {action}: {n}")
code = os.environ["EXIT_CODE"]
print(f"exit after SIGTERM: {code}")
sys.exit(0 if code == "0" else 1)
EOF
