"""Rolling instance refresh through lifecycle hooks."""

from __future__ import annotations

import threading
import time

import pytest
from botocore.exceptions import ClientError

from helpers import drain, group_desc, instances, launch_hook, make_group, queue_with_rule, terminate_hook, wait_until

REFRESH_EVENTS = {"source": ["aws.autoscaling"], "detail-type": [{"prefix": "EC2 Auto Scaling Instance Refresh"}]}


class AutoCompleter:
    """Completes every waiting lifecycle action (like agents would) until stopped."""

    def __init__(self, emu, asg, result_for_launch="CONTINUE"):
        self.emu, self.asg, self.launch_result = emu, asg, result_for_launch
        self.stop = threading.Event()
        self.completed: list[tuple[str, str]] = []
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        while not self.stop.is_set():
            for action in self.emu.ok("GET", "lifecycle-actions")["lifecycle_actions"]:
                result = self.launch_result if action["transition"].endswith("LAUNCHING") else "CONTINUE"
                try:
                    self.asg.complete_lifecycle_action(
                        AutoScalingGroupName=action["group"],
                        LifecycleHookName=action["hook"],
                        LifecycleActionToken=action["token"],
                        LifecycleActionResult=result,
                    )
                    self.completed.append((action["transition"], action["instance_id"]))
                except ClientError:
                    pass
            time.sleep(0.05)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(5)


def _refresh(asg, refresh_id=None):
    kw = {"InstanceRefreshIds": [refresh_id]} if refresh_id else {}
    return asg.describe_instance_refreshes(AutoScalingGroupName="web", **kw)["InstanceRefreshes"][0]


def test_rolling_refresh_through_hooks_to_successful(emu, asg, ec2, sqs, events):
    url = queue_with_rule(sqs, events, "refresh", REFRESH_EVENTS)
    lt = make_group(asg, ec2, desired=4, version="1")
    old = set(instances(asg))
    asg.put_lifecycle_hook(AutoScalingGroupName="web", LifecycleHookName="drain",
                           LifecycleTransition="autoscaling:EC2_INSTANCE_TERMINATING", HeartbeatTimeout=60)
    asg.put_lifecycle_hook(AutoScalingGroupName="web", LifecycleHookName="ready",
                           LifecycleTransition="autoscaling:EC2_INSTANCE_LAUNCHING", HeartbeatTimeout=60)
    ec2.create_launch_template_version(LaunchTemplateId=lt, SourceVersion="1", LaunchTemplateData={"ImageId": "ami-77777777"})
    refresh_id = asg.start_instance_refresh(
        AutoScalingGroupName="web",
        Preferences={"MinHealthyPercentage": 50, "InstanceWarmup": 0, "SkipMatching": True},
        DesiredConfiguration={"LaunchTemplate": {"LaunchTemplateId": lt, "Version": "2"}},
    )["InstanceRefreshId"]
    with pytest.raises(ClientError) as err:
        asg.start_instance_refresh(AutoScalingGroupName="web")
    assert err.value.response["Error"]["Code"] == "InstanceRefreshInProgress"

    # The first batch (2 of 4 at 50 % healthy) waits in Terminating:Wait for the drain hook.
    wait_until(lambda: list(instances(asg).values()).count("Terminating:Wait") == 2, timeout=5)
    r = _refresh(asg, refresh_id)
    assert r["Status"] == "InProgress" and r["InstancesToUpdate"] == 4 and r["PercentageComplete"] == 0

    with AutoCompleter(emu, asg) as agent:
        wait_until(lambda: _refresh(asg, refresh_id)["Status"] == "Successful", timeout=20)
    r = _refresh(asg, refresh_id)
    assert r["PercentageComplete"] == 100 and r["InstancesToUpdate"] == 0 and "EndTime" in r
    states = instances(asg)
    assert not (set(states) & old) and sorted(states.values()) == ["InService"] * 4
    images = {i["InstanceId"]: i["ImageId"] for res in ec2.describe_instances(InstanceIds=list(states))["Reservations"] for i in res["Instances"]}
    assert set(images.values()) == {"ami-77777777"}
    assert group_desc(asg)["LaunchTemplate"]["Version"] == "2"
    kinds = [t for t, _ in agent.completed]
    assert kinds.count("autoscaling:EC2_INSTANCE_TERMINATING") == 4
    assert kinds.count("autoscaling:EC2_INSTANCE_LAUNCHING") == 4
    evs = [e["detail-type"] for e in drain(sqs, url)]
    assert evs == ["EC2 Auto Scaling Instance Refresh Started", "EC2 Auto Scaling Instance Refresh Succeeded"]


def test_refresh_checkpoint_and_cancel(emu, asg, ec2, sqs, events):
    url = queue_with_rule(sqs, events, "refresh", REFRESH_EVENTS)
    make_group(asg, ec2, desired=4, hooks=[terminate_hook()])
    refresh_id = asg.start_instance_refresh(
        AutoScalingGroupName="web",
        Preferences={"MinHealthyPercentage": 75, "InstanceWarmup": 0, "CheckpointPercentages": [50, 100], "CheckpointDelay": 3600},
    )["InstanceRefreshId"]
    with AutoCompleter(emu, asg):
        wait_until(lambda: _refresh(asg)["PercentageComplete"] == 50, timeout=15)
        time.sleep(0.5)
    r = _refresh(asg)
    assert r["Status"] == "InProgress" and "checkpoint" in r.get("StatusReason", "")
    assert r["Preferences"]["CheckpointPercentages"] == [50, 100]
    assert r["Preferences"]["ScaleInProtectedInstances"] == "Wait" and r["Preferences"]["StandbyInstances"] == "Wait"
    evs = drain(sqs, url)
    cp = [e for e in evs if e["detail-type"] == "EC2 Auto Scaling Instance Refresh Checkpoint Reached"]
    assert len(cp) == 1 and cp[0]["detail"] == {
        "InstanceRefreshId": refresh_id, "AutoScalingGroupName": "web", "CheckpointPercentage": "50", "CheckpointDelay": "3600",
    }
    assert asg.cancel_instance_refresh(AutoScalingGroupName="web")["InstanceRefreshId"] == refresh_id
    wait_until(lambda: _refresh(asg)["Status"] == "Cancelled", timeout=5)
    assert "EC2 Auto Scaling Instance Refresh Cancelled" in [e["detail-type"] for e in drain(sqs, url)]
    with pytest.raises(ClientError) as err:
        asg.cancel_instance_refresh(AutoScalingGroupName="web")
    assert err.value.response["Error"]["Code"] == "ActiveInstanceRefreshNotFound"


def test_refresh_fails_when_a_replacement_is_abandoned(emu, asg, ec2, sqs, events):
    url = queue_with_rule(sqs, events, "refresh", REFRESH_EVENTS)
    emu.ok("POST", "config", {"min_heartbeat_timeout_secs": 1})  # a 1 s hook keeps the test short
    make_group(asg, ec2, desired=2, hooks=[launch_hook(default="CONTINUE", timeout=1)])
    wait_until(lambda: sorted(instances(asg).values()) == ["InService", "InService"], timeout=5)
    asg.start_instance_refresh(AutoScalingGroupName="web", Preferences={"MinHealthyPercentage": 50, "InstanceWarmup": 0})
    with AutoCompleter(emu, asg, result_for_launch="ABANDON"):
        wait_until(lambda: _refresh(asg)["Status"] == "Failed", timeout=10)
    assert "abandoned" in _refresh(asg)["StatusReason"]
    assert [e["detail-type"] for e in drain(sqs, url)][-1] == "EC2 Auto Scaling Instance Refresh Failed"


def test_auto_rollback_after_failed_launch(emu, asg, ec2):
    lt = make_group(asg, ec2, desired=2, version="1")
    ec2.create_launch_template_version(LaunchTemplateId=lt, SourceVersion="1", LaunchTemplateData={"ImageId": "ami-99999999"})
    asg.put_lifecycle_hook(AutoScalingGroupName="web", LifecycleHookName="ready",
                           LifecycleTransition="autoscaling:EC2_INSTANCE_LAUNCHING", HeartbeatTimeout=60)
    asg.start_instance_refresh(
        AutoScalingGroupName="web",
        Preferences={"MinHealthyPercentage": 50, "InstanceWarmup": 0, "AutoRollback": True},
        DesiredConfiguration={"LaunchTemplate": {"LaunchTemplateId": lt, "Version": "2"}},
    )
    abandoned = []

    def step():
        for action in emu.ok("GET", "lifecycle-actions")["lifecycle_actions"]:
            result = "ABANDON" if not abandoned else "CONTINUE"
            asg.complete_lifecycle_action(AutoScalingGroupName="web", LifecycleHookName="ready",
                                          LifecycleActionToken=action["token"], LifecycleActionResult=result)
            if result == "ABANDON":
                abandoned.append(action["instance_id"])
        return _refresh(asg)["Status"] == "RollbackSuccessful"

    wait_until(step, timeout=15)
    assert len(abandoned) == 1
    r = _refresh(asg)
    assert "abandoned" in r["StatusReason"] or r["StatusReason"]
    versions = {i["LaunchTemplate"]["Version"] for i in group_desc(asg)["Instances"]}
    assert versions == {"1"} and len(instances(asg)) == 2
    assert group_desc(asg)["LaunchTemplate"]["Version"] == "1"


def test_refresh_waits_for_protected_and_standby_instances(emu, asg, ec2):
    make_group(asg, ec2, desired=3)
    plain, protected, standby = sorted(instances(asg))
    asg.set_instance_protection(AutoScalingGroupName="web", InstanceIds=[protected], ProtectedFromScaleIn=True)
    asg.enter_standby(AutoScalingGroupName="web", InstanceIds=[standby], ShouldDecrementDesiredCapacity=True)
    refresh_id = asg.start_instance_refresh(
        AutoScalingGroupName="web", Preferences={"MinHealthyPercentage": 50, "InstanceWarmup": 0}
    )["InstanceRefreshId"]
    # Default "Wait": the unprotected instance is replaced, then the refresh waits.
    wait_until(lambda: plain not in instances(asg) and "Waiting for instances" in (_refresh(asg).get("StatusReason") or ""),
               timeout=5)
    time.sleep(0.5)
    r = _refresh(asg, refresh_id)
    assert r["Status"] == "InProgress" and r["InstancesToUpdate"] == 2 and r["PercentageComplete"] == 33
    assert protected in instances(asg) and standby in instances(asg)
    asg.set_instance_protection(AutoScalingGroupName="web", InstanceIds=[protected], ProtectedFromScaleIn=False)
    asg.exit_standby(AutoScalingGroupName="web", InstanceIds=[standby])
    wait_until(lambda: _refresh(asg, refresh_id)["Status"] == "Successful", timeout=10)
    assert not {plain, protected, standby} & set(instances(asg))


def test_refresh_ignore_and_replace_modes(emu, asg, ec2):
    make_group(asg, ec2, desired=3)
    plain, protected, standby = sorted(instances(asg))
    asg.set_instance_protection(AutoScalingGroupName="web", InstanceIds=[protected], ProtectedFromScaleIn=True)
    asg.enter_standby(AutoScalingGroupName="web", InstanceIds=[standby], ShouldDecrementDesiredCapacity=True)
    asg.start_instance_refresh(
        AutoScalingGroupName="web",
        Preferences={"MinHealthyPercentage": 50, "InstanceWarmup": 0,
                     "ScaleInProtectedInstances": "Refresh", "StandbyInstances": "Ignore"},
    )
    wait_until(lambda: _refresh(asg)["Status"] == "Successful", timeout=10)
    states = instances(asg)
    assert plain not in states and protected not in states and states[standby] == "Standby"
    prefs = _refresh(asg)["Preferences"]
    assert (prefs["ScaleInProtectedInstances"], prefs["StandbyInstances"]) == ("Refresh", "Ignore")


def test_refresh_wait_gives_up_after_the_wait_time(emu, asg, ec2):
    emu.ok("POST", "config", {"instance_refresh_wait_secs": 0.5})  # AWS waits one hour
    make_group(asg, ec2, desired=1)
    (protected,) = instances(asg)
    asg.set_instance_protection(AutoScalingGroupName="web", InstanceIds=[protected], ProtectedFromScaleIn=True)
    asg.start_instance_refresh(AutoScalingGroupName="web", Preferences={"InstanceWarmup": 0})
    wait_until(lambda: _refresh(asg)["Status"] == "Failed", timeout=5)
    assert protected in _refresh(asg)["StatusReason"]


def test_no_checkpoint_event_at_100_percent(emu, asg, ec2, sqs, events):
    url = queue_with_rule(sqs, events, "refresh", REFRESH_EVENTS)
    make_group(asg, ec2, desired=2)
    asg.start_instance_refresh(
        AutoScalingGroupName="web",
        Preferences={"MinHealthyPercentage": 50, "InstanceWarmup": 0, "CheckpointPercentages": [50, 100], "CheckpointDelay": 0},
    )
    wait_until(lambda: _refresh(asg)["Status"] == "Successful", timeout=10)
    kinds = [e["detail-type"].rsplit("Refresh ", 1)[1] for e in drain(sqs, url)]
    assert kinds == ["Started", "Checkpoint Reached", "Succeeded"]


@pytest.mark.parametrize(
    "prefs, desired, group_version, message",
    [
        ({"CheckpointPercentages": [20, 50]}, None, "1", "must be 100"),
        ({"CheckpointDelay": 60}, None, "1", "CheckpointPercentages"),
        ({"StandbyInstances": "Refresh"}, None, "1", "StandbyInstances"),
        ({"AutoRollback": True}, None, "1", "DesiredConfiguration"),
        ({"AutoRollback": True}, "$Latest", "1", "$Latest or $Default"),
        ({"AutoRollback": True}, "2", "$Default", "$Latest or $Default"),
    ],
)
def test_start_instance_refresh_validation(emu, asg, ec2, prefs, desired, group_version, message):
    lt = make_group(asg, ec2, desired=0, version=group_version)
    ec2.create_launch_template_version(LaunchTemplateId=lt, SourceVersion="1", LaunchTemplateData={"ImageId": "ami-22222222"})
    kwargs = {"DesiredConfiguration": {"LaunchTemplate": {"LaunchTemplateId": lt, "Version": desired}}} if desired else {}
    with pytest.raises(ClientError) as err:
        asg.start_instance_refresh(AutoScalingGroupName="web", Preferences=prefs, **kwargs)
    assert err.value.response["Error"]["Code"] == "ValidationError"
    assert message in err.value.response["Error"]["Message"]
