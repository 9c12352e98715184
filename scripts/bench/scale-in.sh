#!/usr/bin/env bash
# Scale-in benchmark: `lifeguard-controller run` (release build) while an Auto Scaling group of N
# instances in the local AWS emulator (tests/emulator) is scaled in to 0 at once. No agent runs,
# so every terminate lifecycle action ends by the controller's fallback (CONTINUE) after the
# agent grace. The emulator sends each action's EventBridge event to the controller's SQS queue
# (with a dead-letter queue behind it, maxReceiveCount 5).
#
#   scripts/bench/scale-in.sh [N] [--json]
#
# N (default 500) is the group's size. PACING=false turns the controller's client-side token
# buckets off (default: on, at the configuration's defaults). HEARTBEAT_SECS (default 300) is the hook's heartbeat
# timeout (default result ABANDON), GRACE_SECS (default 10) the controller's agent_grace_secs.
# --json prints the results as one JSON object on stdout (the report then goes to stderr).
# LIFEGUARD_CONTROLLER_BIN selects another controller build; without it the release build at
# $CARGO_TARGET_DIR/release/lifeguard-controller is used (CARGO_TARGET_DIR defaults to
# $HOME/.cache/lifeguard/target), built with cargo only when it is missing.
#
# From t0, just before SetDesiredCapacity(0), a sampler polls every 0.5 s: /proc/PID/status
# (VmRSS, VmHWM) and /proc/PID/stat (utime+stime) of the controller and the emulator, the
# controller's /metrics, and the emulator's active lifecycle actions (each with the time it
# started, i.e. the instance entered Terminating:Wait). The run ends when every original instance
# has left the group and no lifecycle action is left (timeout HEARTBEAT_SECS + 120 s).
#
# Reported: time until all N waited in Terminating:Wait (the emulator's start times); events
# processed per second (N / time until lifeguard_messages_deleted_total{kind=
# "lifecycle_terminate"} reached N); time until the last successful CompleteLifecycleAction ended
# (the emulator's call record), with and without the grace; actions lost (instances with no
# successful CONTINUE completion), failed calls and ABANDON completions; the controller's peak
# memory and CPU; the emulator's CPU (near 100% of a core while the controller's is low: the
# emulator is the limit); the AWS calls the controller made during the run per action (count,
# time the emulator spent serving them; the benchmark's own calls are left out); the controller's
# fallback and API error counters; progress every 5 s (messages deleted / actions open in the
# emulator / actions completed). The sampler's lifecycle-actions polls (every 2 s once every
# action has been seen) are not in the call record and add a little to the emulator's CPU. The
# emulator shares the machine's cores with the controller: "other CPU" is the machine's busy time
# beyond the controller, the emulator and the sampler; when it is more than a fraction of the
# run, something else was running and the figures are suspect. Exits 1 if an action was lost,
# the run timed out, or the controller did not exit 0 on SIGTERM. The script starts its own
# emulator on a free port and stops it on exit.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"

size=500
json=false
while (($#)); do
    case "$1" in
        --json)
            json=true
            shift
            ;;
        -h | --help)
            sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
            exit 0
            ;;
        *)
            size="$1"
            shift
            ;;
    esac
done
heartbeat="${HEARTBEAT_SECS:-300}"
grace="${GRACE_SECS:-10}"
if ! [[ "$size" =~ ^[1-9][0-9]*$ && "$heartbeat" =~ ^[1-9][0-9]*$ && "$grace" =~ ^[0-9]+$ ]]; then
    echo "scale-in: N and HEARTBEAT_SECS must be positive integers, GRACE_SECS a whole number" >&2
    exit 2
fi
if ((heartbeat < 30 || heartbeat > 7200)); then
    echo "scale-in: HEARTBEAT_SECS must be 30 to 7200, as AWS allows" >&2
    exit 2
fi

bin="${LIFEGUARD_CONTROLLER_BIN:-}"
if [[ -z "$bin" ]]; then
    export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/lifeguard/target}"
    bin="$CARGO_TARGET_DIR/release/lifeguard-controller"
    if [[ ! -x "$bin" ]]; then
        echo "scale-in: cargo build --release --locked -p lifeguard-controller" >&2
        (cd "$repo" && cargo build --release --locked -p lifeguard-controller >&2)
    fi
fi
if [[ ! -x "$bin" ]]; then
    echo "scale-in: no controller binary at $bin" >&2
    exit 1
fi

# shellcheck source=scripts/bench/lib.sh
source "$here/lib.sh"
bench_init scale-in
start_emulator
export BENCH_ENDPOINT="$endpoint" BENCH_SIZE="$size" BENCH_HEARTBEAT="$heartbeat" BENCH_WORK="$work"

# Shared by the helpers below: clients for the emulator and its control API.
cat >"$work/clients.py" <<'EOF'
import json
import os
import urllib.request

import boto3

ENDPOINT = os.environ["BENCH_ENDPOINT"]
GROUP = "bench"


def client(service):
    return boto3.client(service, endpoint_url=ENDPOINT, region_name="us-east-1")


def control(path):
    with urllib.request.urlopen(f"{ENDPOINT}/_lifeguard/{path}", timeout=30) as answer:
        return json.load(answer)
EOF

# The fleet: the queue (with its dead-letter queue) fed by an EventBridge rule, a group of N
# tagged as managed, then its terminate hook. Prints the queue URL once all N are InService and
# writes their ids to originals.json.
echo "scale-in: emulator $endpoint; creating a group of $size instances" >&2
queue_url="$(PYTHONPATH="$work" timeout "$((120 + size))" "$py" - <<'EOF'
import json
import os
import time
from clients import client, GROUP

n, heartbeat = int(os.environ["BENCH_SIZE"]), int(os.environ["BENCH_HEARTBEAT"])
sqs, events, ec2, autoscaling = client("sqs"), client("events"), client("ec2"), client("autoscaling")


def arn(url):
    return sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]


dead = sqs.create_queue(QueueName="lifeguard-controller-dead")["QueueUrl"]
queue = sqs.create_queue(QueueName="lifeguard-controller")["QueueUrl"]
sqs.set_queue_attributes(QueueUrl=queue, Attributes={
    "RedrivePolicy": json.dumps({"deadLetterTargetArn": arn(dead), "maxReceiveCount": "5"})})
events.put_rule(Name="lifecycle-to-lifeguard", EventPattern=json.dumps({
    "source": ["aws.autoscaling"],
    "detail-type": ["EC2 Instance-terminate Lifecycle Action", "EC2 Instance-launch Lifecycle Action"],
}))
events.put_targets(Rule="lifecycle-to-lifeguard", Targets=[{"Id": "queue", "Arn": arn(queue)}])

image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
template = ec2.create_launch_template(
    LaunchTemplateName="scale-in-bench",
    LaunchTemplateData={"ImageId": image, "InstanceType": "t3.micro"},
)["LaunchTemplate"]["LaunchTemplateId"]
autoscaling.create_auto_scaling_group(
    AutoScalingGroupName=GROUP,
    LaunchTemplate={"LaunchTemplateId": template, "Version": "$Latest"},
    MinSize=0, MaxSize=n, DesiredCapacity=n, AvailabilityZones=["us-east-1a"],
)
autoscaling.create_or_update_tags(Tags=[{
    "ResourceId": GROUP, "ResourceType": "auto-scaling-group", "Key": "lifeguard:managed",
    "Value": "true", "PropagateAtLaunch": False,
}])
autoscaling.put_lifecycle_hook(
    AutoScalingGroupName=GROUP, LifecycleHookName="lifeguard-drain",
    LifecycleTransition="autoscaling:EC2_INSTANCE_TERMINATING",
    HeartbeatTimeout=heartbeat, DefaultResult="ABANDON",
)
while True:
    group = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[GROUP])["AutoScalingGroups"][0]
    members = [i["InstanceId"] for i in group["Instances"] if i["LifecycleState"] == "InService"]
    if len(members) == n:
        break
    time.sleep(1)
with open(os.path.join(os.environ["BENCH_WORK"], "originals.json"), "w") as f:
    json.dump(members, f)
print(queue)
EOF
)" || {
    echo "scale-in: setting up the group failed or timed out (${size} + 120 s)" >&2
    exit 1
}

http_port="$("$py" -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])')"
cat >"$work/controller.toml" <<EOF
[aws]
region = "us-east-1"
endpoint_url = "$endpoint"
max_attempts = 8
retry_mode = "adaptive"
connect_timeout_ms = 2000

[queue]
url = "$queue_url"
workers = 16
wait_time_secs = 1
visibility_timeout_secs = 60

[groups]
tag = "lifeguard:managed"

[groups.defaults]
agent_grace_secs = $grace
fallback_result = "CONTINUE"
heartbeat_while_waiting = true

[reconcile]
interval_secs = 30

[pacing]
enabled = ${PACING:-true}

[http]
listen = "127.0.0.1:$http_port"

[log]
format = "json"
level = "info"
EOF

LIFEGUARD_REPLICA_ID=bench "$bin" --config "$work/controller.toml" run </dev/null \
    >"$work/controller.log" 2>&1 &
controller_pid=$!
bench_track "$controller_pid"
ready=false
for _ in $(seq 300); do
    if curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:$http_port/readyz" 2>/dev/null; then
        ready=true
        break
    fi
    if ! alive "$controller_pid"; then
        echo "scale-in: the controller exited before it was ready:" >&2
        cat "$work/controller.log" >&2
        exit 1
    fi
    sleep 0.1
done
if [[ "$ready" != true ]]; then
    echo "scale-in: the controller's /readyz did not answer 200 within 30 s:" >&2
    tail -n 50 "$work/controller.log" >&2
    exit 1
fi
echo "scale-in: controller $controller_pid ready on 127.0.0.1:$http_port; heartbeat timeout" \
    "${heartbeat} s, grace ${grace} s; scaling in" >&2

# The run: t0, SetDesiredCapacity(0) in a thread, and every 0.5 s a sample of both processes,
# the controller's /metrics and the emulator's lifecycle actions, until the originals are gone
# and no action is left. Writes run.json: the samples, the marks in time, the calls recorded
# since t0 and the last /metrics page.
cat >"$work/run.py" <<'EOF'
import json
import os
import re
import sys
import threading
import time
import urllib.request
from clients import client, control, GROUP

work = os.environ["BENCH_WORK"]
n = int(os.environ["BENCH_SIZE"])
deadline_secs = int(os.environ["BENCH_HEARTBEAT"]) + 120
controller, emulator = int(os.environ["CONTROLLER_PID"]), int(os.environ["EMULATOR_PID"])
metrics_url = os.environ["METRICS_URL"]
originals = set(json.load(open(os.path.join(work, "originals.json"))))
autoscaling = client("autoscaling")
DELETED = re.compile(r'^lifeguard_messages_deleted_total\{kind="lifecycle_terminate"\} (\S+)$', re.M)


def ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(") ", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def memory(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                out[line.split(":")[0]] = int(line.split()[1])
    return out.get("VmRSS", 0), out.get("VmHWM", 0)


def machine():
    # busy (user, nice, system, irq, softirq) and steal ticks of the whole machine
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return v[0] + v[1] + v[2] + v[5] + v[6], v[7]


def metrics_page():
    with urllib.request.urlopen(metrics_url, timeout=5) as answer:
        return answer.read().decode()


def members():
    # MaxRecords=1 marks the benchmark's own DescribeAutoScalingGroups in the call record.
    group = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[GROUP], MaxRecords=1)
    return {i["InstanceId"]: i["LifecycleState"] for i in group["AutoScalingGroups"][0]["Instances"]}


last = control("calls?limit=1")["calls"]
seq0 = last[-1]["seq"] if last else 0
if control("lifecycle-actions")["lifecycle_actions"]:
    sys.exit("lifecycle actions are active before the scale-in")

started, tokens = {}, {}   # instance id -> (started, first seen); token -> instance id
samples, marks, errors = [], {}, []
desired = {}


def scale_in():
    t = time.time()
    try:
        autoscaling.set_desired_capacity(AutoScalingGroupName=GROUP, DesiredCapacity=0, HonorCooldown=False)
    except Exception as e:  # reported, and the run ends by its deadline
        desired["error"] = repr(e)
    desired["secs"] = time.time() - t


busy0, steal0 = machine()
self0 = os.times()
controller_ticks0, emulator_ticks0 = ticks(controller), ticks(emulator)
t0 = time.time()
thread = threading.Thread(target=scale_in)
thread.start()
deleted = 0.0
polls, polls_s = 0, 0.0  # lifecycle-actions polls and their wall time
last_actions_poll = 0.0
last_members_check = 0.0
gone_at = None
timed_out = False
while True:
    tick = t0 + 0.5 * (len(samples) + 1)
    time.sleep(max(0.0, tick - time.time()))
    now = time.time()
    rss, hwm = memory(controller)
    samples.append({"t": now - t0, "rss_kib": rss, "hwm_kib": hwm,
                    "controller_ticks": ticks(controller), "emulator_ticks": ticks(emulator)})
    try:
        found = DELETED.search(metrics_page())
        deleted = float(found.group(1)) if found else 0.0
    except OSError as e:
        errors.append(f"{now - t0:.1f}s /metrics: {e}")
    samples[-1]["deleted"] = deleted
    if deleted >= n and "deleted_n" not in marks:
        marks["deleted_n"] = now - t0
    # Every 0.5 s until every original's action has been seen (their start times and tokens),
    # then every 2 s: the list costs the busy emulator more than /metrics costs the controller.
    actions = None
    if "all_seen" not in marks or now - last_actions_poll >= 2:
        last_actions_poll = now
        try:
            asked = time.time()
            actions = control("lifecycle-actions")["lifecycle_actions"]
            polls_s += time.time() - asked
            polls += 1
        except OSError as e:
            errors.append(f"{now - t0:.1f}s lifecycle-actions: {e}")
    if actions is not None:
        samples[-1]["actions"] = len(actions)
        for a in actions:
            tokens[a["token"]] = a["instance_id"]
            if a["instance_id"] in originals and a["instance_id"] not in started:
                started[a["instance_id"]] = (a["started"], now - t0)
        if len(started) == len(originals) and "all_seen" not in marks:
            marks["all_seen"] = now - t0
        # DescribeAutoScalingGroups costs the emulator more: only when the end is near.
        if not actions and thread.is_alive() is False and now - last_members_check >= 2:
            last_members_check = now
            left = originals & set(members())
            if not left:
                gone_at = now - t0
                break
    if "error" in desired:
        break
    if now - t0 > deadline_secs:
        timed_out = True
        break
t1 = time.time()
controller_ticks1, emulator_ticks1 = ticks(controller), ticks(emulator)
thread.join(timeout=30)
busy1, steal1 = machine()
self1 = os.times()
try:
    page = metrics_page()
except OSError as e:
    page = ""
    errors.append(f"final /metrics: {e}")
remaining = {}
try:
    remaining = {i: s for i, s in members().items() if i in originals}
except Exception as e:
    errors.append(f"final DescribeAutoScalingGroups: {e!r}")
calls = control(f"calls?since={seq0}")["calls"]
json.dump({
    "t0": t0, "t1": t1, "seq0": seq0,
    "controller_ticks0": controller_ticks0, "emulator_ticks0": emulator_ticks0,
    "controller_ticks1": controller_ticks1, "emulator_ticks1": emulator_ticks1,
    "timed_out": timed_out, "gone_at": gone_at,
    "marks": marks, "samples": samples, "started": started, "tokens": tokens,
    "set_desired_capacity": desired, "errors": errors, "remaining": remaining,
    "calls": calls, "metrics": page,
    "machine_busy_ticks": busy1 - busy0, "machine_steal_ticks": steal1 - steal0,
    "sampler_cpu_s": (self1.user + self1.system) - (self0.user + self0.system),
    "sampler_polls": polls, "sampler_polls_s": polls_s,
}, open(os.path.join(work, "run.json"), "w"))
EOF

load_before="$(cut -d' ' -f1-3 /proc/loadavg)"
run_ok=true
CONTROLLER_PID="$controller_pid" EMULATOR_PID="$emulator_pid" \
    METRICS_URL="http://127.0.0.1:$http_port/metrics" PYTHONPATH="$work" \
    timeout "$((heartbeat + 240))" "$py" "$work/run.py" || run_ok=false
load_after="$(cut -d' ' -f1-3 /proc/loadavg)"
if [[ "$run_ok" != true || ! -s "$work/run.json" ]]; then
    echo "scale-in: the run failed; the controller's log ends:" >&2
    tail -n 50 "$work/controller.log" >&2
    exit 1
fi
threads="$(awk '/^Threads:/ { print $2 }' "/proc/$controller_pid/status" 2>/dev/null || true)"

stop_child "$controller_pid" controller 30

N="$size" HEARTBEAT="$heartbeat" GRACE="$grace" CLK_TCK="$(getconf CLK_TCK)" NPROC="$(nproc)" \
    THREADS="$threads" EXIT_CODE="$exit_code" LOAD_BEFORE="$load_before" LOAD_AFTER="$load_after" \
    JSON="$json" python3 - "$work" <<'EOF'
import collections
import datetime
import json
import os
import re
import statistics
import sys

work = sys.argv[1]
run = json.load(open(os.path.join(work, "run.json")))
originals = set(json.load(open(os.path.join(work, "originals.json"))))
n, heartbeat, grace = int(os.environ["N"]), int(os.environ["HEARTBEAT"]), int(os.environ["GRACE"])
hz = int(os.environ["CLK_TCK"])
t0, t1 = run["t0"], run["t1"]
elapsed = t1 - t0


def epoch(iso):
    return datetime.datetime.strptime(iso, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=datetime.timezone.utc).timestamp()


def r(x, digits=3):
    return None if x is None else round(x, digits)


def metric(page, name):
    """Sum of the samples of NAME (any labels), and each labelled sample."""
    total, each = 0.0, {}
    for line in page.splitlines():
        m = re.match(rf"^{name}(\{{[^}}]*\}})? (\S+)$", line)
        if m:
            total += float(m.group(2))
            each[m.group(1) or ""] = float(m.group(2))
    return total, each


samples = run["samples"]
calls = run["calls"]


def own(c):
    # The benchmark's own calls: its SetDesiredCapacity and its marked DescribeAutoScalingGroups.
    return (c["service"] == "autoscaling" and c["action"] == "SetDesiredCapacity") or (
        c["service"] == "autoscaling" and c["action"] == "DescribeAutoScalingGroups"
        and isinstance(c["params"], dict) and c["params"].get("MaxRecords") == "1")


controller_calls = [c for c in calls if not own(c)]

# Terminating:Wait: when the emulator started each original's action.
waits = {i: epoch(s) for i, (s, _) in run["started"].items()}
all_waiting = max(waits.values()) - t0 if len(waits) == len(originals) else None
first_waiting = min(waits.values()) - t0 if waits else None

# Completions.
completes = [c for c in calls if c["service"] == "autoscaling" and c["action"] == "CompleteLifecycleAction"]
done_at, results, failed, abandon = {}, collections.Counter(), 0, 0
for c in completes:
    p = c["params"] if isinstance(c["params"], dict) else {}
    instance = p.get("InstanceId") or run["tokens"].get(p.get("LifecycleActionToken"))
    result = p.get("LifecycleActionResult")
    if c["status"] != 200:
        failed += c["status"] is not None
        continue
    results[result] += 1
    if result == "ABANDON":
        abandon += 1
    if result == "CONTINUE" and instance in originals:
        end = epoch(c["time"]) + (c["duration_ms"] or 0) / 1000
        done_at[instance] = min(done_at.get(instance, end), end)
lost = len(originals) - len(done_at)
first_completed = min(done_at.values()) - t0 if done_at else None
all_completed = max(done_at.values()) - t0 if done_at else None
took = sorted(done_at[i] - waits[i] for i in done_at if i in waits)


# CPU and memory over the window [t0, t1].
controller_cpu = (run["controller_ticks1"] - run["controller_ticks0"]) / hz
emulator_cpu = (run["emulator_ticks1"] - run["emulator_ticks0"]) / hz
other_cpu = max(0.0, run["machine_busy_ticks"] / hz - controller_cpu - emulator_cpu - run["sampler_cpu_s"])
peak = {"controller": 0.0, "emulator": 0.0}
previous = {"t": 0.0, "controller_ticks": run["controller_ticks0"], "emulator_ticks": run["emulator_ticks0"]}
for s in samples:
    dt = s["t"] - previous["t"]
    if dt > 0:
        for who in peak:
            busy = (s[f"{who}_ticks"] - previous[f"{who}_ticks"]) / hz
            peak[who] = max(peak[who], 100 * busy / dt)
    previous = s
rss = [s["rss_kib"] / 1024 for s in samples]
hwm = max(s["hwm_kib"] for s in samples) / 1024

# The controller's calls during the run, per service and action.
per_action = collections.defaultdict(lambda: {"calls": 0, "failed": 0, "served_s": 0.0, "max_ms": 0.0})
for c in controller_calls:
    a = per_action[f"{c['service']} {c['action']}"]
    a["calls"] += 1
    a["failed"] += c["status"] not in (200, None)  # None: still being served (a long poll)
    a["served_s"] += (c["duration_ms"] or 0) / 1000
    a["max_ms"] = max(a["max_ms"], c["duration_ms"] or 0)
calls_out = {}
for name, a in sorted(per_action.items(), key=lambda kv: -kv[1]["served_s"]):
    calls_out[name] = {"calls": a["calls"], "failed": a["failed"], "per_action": r(a["calls"] / n, 2),
                       "served_s": r(a["served_s"], 2), "mean_ms": r(1000 * a["served_s"] / a["calls"], 1),
                       "max_ms": r(a["max_ms"], 1)}
error_codes = collections.Counter(
    f"{c['action']} {c['status']} {c['error_code']}" for c in controller_calls if c["status"] not in (200, None))

page = run["metrics"]
metrics = {}
for name in ["lifeguard_messages_received_total", "lifeguard_messages_deleted_total",
             "lifeguard_messages_failed_total", "lifeguard_drains_completed_total",
             "lifeguard_fallbacks_total", "lifeguard_heartbeats_total",
             "lifeguard_lifecycle_api_errors_total", "lifeguard_queue_polls_failed_total",
             "lifeguard_reconciles_total", "lifeguard_drain_duration_seconds_sum",
             "lifeguard_drain_duration_seconds_count"]:
    total, each = metric(page, name)
    # Labelled families as {labels: value}, plain counters as a number.
    metrics[name] = each if any(each) else total
deleted_n = run["marks"].get("deleted_n")

# Progress every 5 s: messages deleted, actions open in the emulator, actions completed.
progress = []
open_actions = None  # as of the latest lifecycle-actions poll
for sample in samples:
    open_actions = sample.get("actions", open_actions)
    if int(sample["t"] / 5) > len(progress) - 1 or sample is samples[-1]:
        at = t0 + sample["t"]
        progress.append({"t": r(sample["t"], 1), "deleted": int(sample["deleted"]),
                         "open": open_actions,
                         "completed": sum(1 for d in done_at.values() if d <= at)})

# What the controller logged, by level and message.
levels, loud = collections.Counter(), collections.Counter()
with open(os.path.join(work, "controller.log"), errors="replace") as f:
    for line in f:
        try:
            entry = json.loads(line)
        except ValueError:
            levels["unparsed"] += 1
            continue
        level = str(entry.get("level", "?")).upper()
        levels[level] += 1
        loud[f"{level} {entry.get('message', '?')}"] += 1

code = os.environ["EXIT_CODE"]
result = {
    "n": n, "heartbeat_timeout_s": heartbeat, "agent_grace_s": grace,
    "cpus": int(os.environ["NPROC"]),
    "loadavg_before": os.environ["LOAD_BEFORE"], "loadavg_after": os.environ["LOAD_AFTER"],
    "timed_out": run["timed_out"],
    "run_s": r(elapsed, 2),
    "set_desired_capacity_s": r(run["set_desired_capacity"].get("secs")),
    "set_desired_capacity_error": run["set_desired_capacity"].get("error"),
    "first_terminating_wait_s": r(first_waiting),
    "all_terminating_wait_s": r(all_waiting),
    "terminating_wait_seen": len(waits),
    "deleted_reached_n_s": r(deleted_n, 2),
    "events_per_s": r(n / deleted_n, 1) if deleted_n else None,
    "first_completed_s": r(first_completed),
    "all_completed_s": r(all_completed),
    "all_completed_minus_grace_s": r(all_completed - grace) if all_completed is not None else None,
    "action_s": {"min": r(took[0]), "median": r(statistics.median(took)), "max": r(took[-1])} if took else None,
    "action_minus_grace_s": {"min": r(took[0] - grace), "median": r(statistics.median(took) - grace),
                             "max": r(took[-1] - grace)} if took else None,
    "left_group_s": r(run["gone_at"], 2),
    "lost": lost,
    "completions": dict(results),
    "complete_calls_failed": failed,
    "abandon_completions": abandon,
    "still_in_group": run["remaining"],
    "controller": {
        "peak_rss_mib": r(hwm, 1), "mean_rss_mib": r(statistics.mean(rss), 1), "max_rss_mib": r(max(rss), 1),
        "threads": int(os.environ["THREADS"] or 0), "cpu_s": r(controller_cpu, 2),
        "cpu_pct_of_core": r(100 * controller_cpu / elapsed, 1),
        "busiest_half_second_pct": r(peak["controller"], 0),
        "exit_after_sigterm": code,
    },
    "emulator": {"cpu_s": r(emulator_cpu, 2), "cpu_pct_of_core": r(100 * emulator_cpu / elapsed, 1),
                 "busiest_half_second_pct": r(peak["emulator"], 0)},
    "sampler_cpu_s": r(run["sampler_cpu_s"], 2),
    "sampler_polls": run["sampler_polls"],
    "sampler_polls_s": r(run["sampler_polls_s"], 2),
    "other_cpu_s": r(other_cpu, 2),
    "steal_s": r(run["machine_steal_ticks"] / hz, 2),
    "controller_calls": len(controller_calls),
    "controller_calls_failed": dict(error_codes),
    "calls_by_action": calls_out,
    "metrics": metrics,
    "progress": progress,
    "controller_log_levels": dict(levels),
    "controller_log_messages": dict(loud.most_common(20)),
    "sampler_errors": run["errors"],
}

out = sys.stdout
if os.environ["JSON"] == "true":
    json.dump(result, sys.stdout, indent=2)
    print()
    out = sys.stderr


def say(text=""):
    print(text, file=out)


def secs(x, unit=" s"):
    return "n/a" if x is None else f"{x:.2f}{unit}"


def counter(v):
    if isinstance(v, dict):
        return ", ".join(f"{k} {x:g}" for k, x in v.items()) or "0"
    return f"{v:g}"


say(f"scale-in of {n} instances: heartbeat timeout {heartbeat} s, agent grace {grace} s, "
    f"{result['cpus']} CPUs, load average {result['loadavg_before']} before, {result['loadavg_after']} after")
say(f"run (t0 to all gone):      {elapsed:.2f} s{'  TIMED OUT' if run['timed_out'] else ''}; "
    f"SetDesiredCapacity(0) took {secs(result['set_desired_capacity_s'])}"
    + (f" and failed: {result['set_desired_capacity_error']}" if result["set_desired_capacity_error"] else ""))
say(f"all in Terminating:Wait:   {secs(all_waiting)} after t0 (first {secs(first_waiting)}; "
    f"{len(waits)}/{n} seen; the emulator's action start times)")
say(f"events processed:          messages_deleted_total{{kind=\"lifecycle_terminate\"}} reached {n} "
    f"{secs(deleted_n)} after t0 (0.5 s polls): {secs(result['events_per_s'], '/s')}")
say(f"all actions completed:     {secs(all_completed)} after t0 (end of the last successful "
    f"CompleteLifecycleAction); minus the grace: {secs(result['all_completed_minus_grace_s'])}; "
    f"first one {secs(first_completed)}")
if took:
    a, b = result["action_s"], result["action_minus_grace_s"]
    say(f"per action (wait to done): min {a['min']:.2f} s, median {a['median']:.2f} s, max {a['max']:.2f} s; "
        f"beyond the grace: median {b['median']:.2f} s, max {b['max']:.2f} s (heartbeat timeout {heartbeat} s)")
say("progress (s: deleted/open/completed): "
    + ", ".join(f"{p['t']:g}: {p['deleted']}/{p['open']}/{p['completed']}" for p in progress))
say(f"originals left the group:  {secs(result['left_group_s'])} after t0 (checked every 2 s once no action was left)")
say(f"actions lost:              {lost} of {n}; successful completions {dict(results) or '{}'}; "
    f"failed CompleteLifecycleAction calls {failed}; ABANDON completions {abandon}")
if run["remaining"]:
    say(f"  still in the group: {len(run['remaining'])}, e.g. {list(run['remaining'].items())[:5]}")
c, e = result["controller"], result["emulator"]
say(f"controller:                peak (VmHWM) {c['peak_rss_mib']:.1f} MiB, RSS mean {c['mean_rss_mib']:.1f} MiB, "
    f"max {c['max_rss_mib']:.1f} MiB, {c['threads']} threads; CPU {c['cpu_s']:.2f} s = "
    f"{c['cpu_pct_of_core']:.1f}% of one core (busiest 0.5 s: {c['busiest_half_second_pct']:.0f}%)")
say(f"emulator:                  CPU {e['cpu_s']:.2f} s = {e['cpu_pct_of_core']:.1f}% of one core "
    f"(busiest 0.5 s: {e['busiest_half_second_pct']:.0f}%)")
say(f"elsewhere:                 sampler {result['sampler_cpu_s']:.2f} s; other CPU {result['other_cpu_s']:.2f} s; "
    f"steal {result['steal_s']:.2f} s; the sampler's {run['sampler_polls']} lifecycle-actions polls "
    f"waited {result['sampler_polls_s']:.2f} s for the emulator in all")
say(f"controller's AWS calls during the run: {len(controller_calls)}"
    + (f", failed: {dict(error_codes)}" if error_codes else ", none failed"))
say(f"  {'service action':46} {'calls':>6} {'/action':>8} {'failed':>6} {'served s':>9} {'mean ms':>8} {'max ms':>8}")
for name, a in list(calls_out.items())[:12]:
    say(f"  {name:46} {a['calls']:6d} {a['per_action']:8.2f} {a['failed']:6d} {a['served_s']:9.2f} "
        f"{a['mean_ms']:8.1f} {a['max_ms']:8.1f}")
if len(calls_out) > 12:
    say(f"  ... {len(calls_out) - 12} more (see --json)")
say("  (served s: each call's time in the emulator from arrival to answer, summed; calls overlap, so it is\n"
    "  latency, waiting for the busy emulator included, not CPU; ReceiveMessage's includes its long poll)")
say(f"lifeguard_fallbacks_total {counter(metrics['lifeguard_fallbacks_total'])}; "
    f"lifeguard_lifecycle_api_errors_total {counter(metrics['lifeguard_lifecycle_api_errors_total'])}")
drains = metrics["lifeguard_drains_completed_total"]
drains = sum(drains.values()) if isinstance(drains, dict) else drains
if drains != n:
    say(f"note: lifeguard_drains_completed_total sums to {drains:g} for {n} lifecycle actions")
say(f"lifeguard_drains_completed_total {counter(metrics['lifeguard_drains_completed_total'])}; "
    f"lifeguard_heartbeats_total {counter(metrics['lifeguard_heartbeats_total'])}; "
    f"lifeguard_messages_failed_total {counter(metrics['lifeguard_messages_failed_total'])}")
say(f"controller log lines by level: {dict(levels)}" + "".join(f"\n  {k}: {v}" for k, v in loud.most_common(20)))
if run["errors"]:
    say(f"sampler errors: {run['errors'][:5]}")
say(f"exit after SIGTERM: {code}")
problems = []
if lost:
    problems.append(f"{lost} action(s) lost")
if run["timed_out"]:
    problems.append("timed out")
if code != "0":
    problems.append(f"controller exit {code}")
if problems:
    say("FAILED: " + ", ".join(problems))
sys.exit(1 if problems else 0)
EOF
