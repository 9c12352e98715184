"""Optional realism: duplicated and delayed EventBridge deliveries, seeds, Auto Scaling
throttling."""

from __future__ import annotations

import json
import time

import pytest
from botocore.exceptions import ClientError

from helpers import drain, make_group, queue_with_rule, wait_until

PATTERN = {"source": ["test.realism"]}


def _put(events, count):
    for i in range(count):
        events.put_events(Entries=[{"Source": "test.realism", "DetailType": "n", "Detail": json.dumps({"i": i})}])


def _collect(sqs, url, count, timeout=5.0):
    got: list = []
    wait_until(lambda: got.extend(drain(sqs, url)) or len(got) >= count, timeout=timeout, what=f"{count} deliveries")
    return got


def test_duplicates_are_the_same_event(emu, sqs, events):
    emu.ok("POST", "config", {"event_duplicate_probability": 1.0})
    url = queue_with_rule(sqs, events, "dup", PATTERN)
    _put(events, 3)
    got = _collect(sqs, url, 6)
    assert sorted(e["detail"]["i"] for e in got) == [0, 0, 1, 1, 2, 2]
    assert len({e["id"] for e in got}) == 3  # a duplicate carries the same event id


def test_delays_reorder_deliveries(emu, sqs, events):
    emu.ok("POST", "config", {"event_max_delay_secs": 1.0, "random_seed": 3})
    url = queue_with_rule(sqs, events, "late", PATTERN)
    _put(events, 12)
    early = drain(sqs, url)  # deliveries wait for the timer: not all of them are there yet
    assert len(early) < 12
    got = early + _collect(sqs, url, 12 - len(early), timeout=4)
    order = [e["detail"]["i"] for e in got]
    assert sorted(order) == list(range(12)) and order != sorted(order)


def test_random_seed_makes_duplicates_reproducible(emu, sqs, events):
    url = queue_with_rule(sqs, events, "seeded", PATTERN)

    def run():
        emu.ok("POST", "config", {"event_duplicate_probability": 0.5, "random_seed": 11})
        _put(events, 20)
        got = _collect(sqs, url, 20)
        time.sleep(0.2)
        got += drain(sqs, url)
        return sorted(e["detail"]["i"] for e in got)

    first = run()
    assert 20 < len(first) < 40
    assert run() == first


def test_autoscaling_rate_limit(emu, asg, ec2, sqs):
    make_group(asg, ec2, desired=0)
    emu.ok("POST", "config", {"autoscaling_rate_limit": {"per_sec": 1, "burst": 2}})
    asg.describe_auto_scaling_groups()
    asg.describe_auto_scaling_groups()
    with pytest.raises(ClientError) as err:
        asg.describe_auto_scaling_groups()
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert err.value.response["Error"] == {"Type": "Sender", "Code": "Throttling", "Message": "Rate exceeded"}
    sqs.list_queues()  # other services are not limited
    ec2.describe_instances()
    (last,) = emu.ok("GET", "calls?service=autoscaling&limit=1")["calls"]
    assert (last["action"], last["status"], last["error_code"]) == ("DescribeAutoScalingGroups", 400, "Throttling")
    time.sleep(1.1)  # one token a second: one is back
    asg.describe_auto_scaling_groups()
    emu.ok("POST", "config", {"autoscaling_rate_limit": None})
    for _ in range(5):
        asg.describe_auto_scaling_groups()
