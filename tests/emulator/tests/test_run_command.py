"""SSM Run Command invocations progress in time and end with the outcome set through the
control API (run_command.py, run_command_api.py).

Timings: the defaults (0.5 s invisible, 1 s Pending, 2 s InProgress, expiry after
TimeoutSeconds + executionTimeout, i.e. more than an hour) are shortened per test through
the config so that every phase is still seen and each test ends within a few seconds."""

from __future__ import annotations

import datetime as dt
import time

import pytest
from botocore.exceptions import ClientError

from helpers import wait_until

# Phases long enough to be observed one by one by a client polling every 50 ms, with room
# for a loaded machine.
PHASES = {"ssm_invocation_visible_secs": 0.3, "ssm_pending_secs": 1.0, "ssm_command_secs": 0.8}
# Phases as short as the tests that only look at the end allow.
QUICK = {"ssm_invocation_visible_secs": 0.0, "ssm_pending_secs": 0.05, "ssm_command_secs": 0.1}


@pytest.fixture()
def ssm(emu):
    return emu.client("ssm")


def launch(ec2, count: int = 1) -> list[str]:
    reservation = ec2.run_instances(ImageId="ami-12c6146b", MinCount=count, MaxCount=count)
    return [i["InstanceId"] for i in reservation["Instances"]]


def send(ssm, instance_ids: list[str], **extra) -> dict:
    return ssm.send_command(
        DocumentName="AWS-RunShellScript",
        InstanceIds=instance_ids,
        Parameters=extra.pop("Parameters", {"commands": ["yum -y update"]}),
        Comment=extra.pop("Comment", "patch the builder"),
        **extra,
    )["Command"]


def invocation(ssm, command_id: str, instance_id: str) -> dict | None:
    try:
        return ssm.get_command_invocation(CommandId=command_id, InstanceId=instance_id)
    except ClientError as err:
        assert err.response["Error"]["Code"] == "InvocationDoesNotExist", err.response
        return None


def ended(ssm, command_id: str, instance_id: str, timeout: float = 5.0) -> dict:
    return wait_until(
        lambda: (lambda i: i if i and i["Status"] not in ("Pending", "InProgress", "Delayed") else None)(
            invocation(ssm, command_id, instance_id)
        ),
        timeout=timeout,
        what="a terminal invocation",
    )


def code_of(call) -> str:
    with pytest.raises(ClientError) as err:
        call()
    return err.value.response["Error"]["Code"]


def test_an_invocation_goes_pending_in_progress_success(emu, ssm, ec2):
    emu.ok("POST", "config", PHASES)
    (iid,) = launch(ec2)
    sent_at = dt.datetime.now(dt.timezone.utc)
    command = send(ssm, [iid])
    # SendCommand answers a command nobody has picked up yet.
    assert (command["Status"], command["StatusDetails"]) == ("Pending", "Pending")
    assert (command["CompletedCount"], command["ErrorCount"], command["TargetCount"]) == (0, 0, 1)
    cid = command["CommandId"]
    # Right after SendCommand the invocation is not known yet, as on AWS.
    assert code_of(lambda: ssm.get_command_invocation(CommandId=cid, InstanceId=iid)) == "InvocationDoesNotExist"
    assert ssm.list_command_invocations(CommandId=cid)["CommandInvocations"] == []
    seen = []
    while True:
        inv = invocation(ssm, cid, iid)
        if inv is not None and (not seen or seen[-1]["Status"] != inv["Status"]):
            seen.append(inv)
        if inv is not None and inv["Status"] == "Success":
            break
        assert dt.datetime.now(dt.timezone.utc) - sent_at < dt.timedelta(seconds=5), seen
        time.sleep(0.05)
    assert [s["Status"] for s in seen] == ["Pending", "InProgress", "Success"]
    pending, running, done = seen
    assert pending["ResponseCode"] == -1 and pending["ExecutionStartDateTime"] == "" and pending["StatusDetails"] == "Pending"
    assert running["ResponseCode"] == -1 and running["ExecutionStartDateTime"] and running["ExecutionEndDateTime"] == ""
    assert running["StatusDetails"] == "InProgress" and running["StandardOutputContent"] == ""
    assert done["ResponseCode"] == 0 and done["StatusDetails"] == "Success"
    assert done["PluginName"] == "aws:runShellScript" and done["Comment"] == "patch the builder"
    start = dt.datetime.fromisoformat(done["ExecutionStartDateTime"].replace("Z", "+00:00"))
    end = dt.datetime.fromisoformat(done["ExecutionEndDateTime"].replace("Z", "+00:00"))
    assert start == dt.datetime.fromisoformat(running["ExecutionStartDateTime"].replace("Z", "+00:00"))
    assert sent_at - dt.timedelta(seconds=1) < start < end < sent_at + dt.timedelta(seconds=5)
    assert abs((end - start).total_seconds() - PHASES["ssm_command_secs"]) < 0.05
    assert done["ExecutionElapsedTime"].startswith("PT") and done["ExecutionElapsedTime"].endswith("S")
    (listed,) = ssm.list_commands(CommandId=cid)["Commands"]
    assert (listed["Status"], listed["StatusDetails"], listed["Comment"]) == ("Success", "Success", "patch the builder")
    assert (listed["CompletedCount"], listed["ErrorCount"], listed["DeliveryTimedOutCount"]) == (1, 0, 0)


def test_defaults_are_documented_values(emu, ssm, ec2):
    emu.ok("POST", "reset")  # AWS's timings, not the suite's
    config = emu.ok("GET", "config")
    assert config["ssm_invocation_visible_secs"] == 0.5 and config["ssm_pending_secs"] == 1.0
    assert config["ssm_command_secs"] == 2.0 and config["ssm_expiry_secs"] is None
    (iid,) = launch(ec2)
    command = send(ssm, [iid])
    assert code_of(lambda: ssm.get_command_invocation(CommandId=command["CommandId"], InstanceId=iid)) == "InvocationDoesNotExist"
    # ExpiresAfter as SSM computes it: TimeoutSeconds (3600 when not given) + executionTimeout (3600).
    assert command["ExpiresAfter"] - command["RequestedDateTime"] == dt.timedelta(seconds=7200)
    inv = wait_until(lambda: invocation(ssm, command["CommandId"], iid), timeout=2)
    assert inv["Status"] == "Pending"


def test_outcome_for_one_instance_and_the_aggregated_command(emu, ssm, ec2):
    emu.ok("POST", "config", QUICK)
    bad, good = launch(ec2, 2)
    set_ = emu.ok(
        "POST",
        "ssm/outcomes",
        {"instance_id": bad, "status": "Failed", "response_code": 2, "stdout": "ran", "stderr": "boom", "secs": 0.3},
    )
    assert set_["count_left"] is None and set_["status"] == "Failed"
    command = send(ssm, [bad, good])
    cid = command["CommandId"]
    failed, succeeded = ended(ssm, cid, bad), ended(ssm, cid, good)
    assert (failed["Status"], failed["StatusDetails"], failed["ResponseCode"]) == ("Failed", "Failed", 2)
    assert (failed["StandardOutputContent"], failed["StandardErrorContent"]) == ("ran", "boom")
    assert (succeeded["Status"], succeeded["ResponseCode"], succeeded["StandardErrorContent"]) == ("Success", 0, "")
    # One failed invocation is more than MaxErrors 0: the command failed.
    (listed,) = ssm.list_commands(CommandId=cid)["Commands"]
    assert (listed["Status"], listed["CompletedCount"], listed["ErrorCount"]) == ("Failed", 2, 1)
    # The outcome stays for later commands to that instance until cleared.
    again = send(ssm, [bad])["CommandId"]
    assert ended(ssm, again, bad)["Status"] == "Failed"
    assert emu.ok("DELETE", f"ssm/outcomes?instance_id={bad}") == {"cleared": 1}
    third = send(ssm, [bad])["CommandId"]
    assert ended(ssm, third, bad)["Status"] == "Success"


def test_outcome_for_any_instance_with_a_count(emu, ssm, ec2):
    emu.ok("POST", "config", QUICK)
    (iid,) = launch(ec2)
    emu.ok("POST", "ssm/outcomes", {"status": "TimedOut", "count": 1})
    emu.ok("POST", "ssm/outcomes", {"instance_id": "i-0000000000000abcd", "status": "Failed"})
    assert [o["count_left"] for o in emu.ok("GET", "ssm/outcomes")["outcomes"]] == [1, None]
    first = ended(ssm, send(ssm, [iid])["CommandId"], iid)
    assert (first["Status"], first["StatusDetails"], first["ResponseCode"]) == ("TimedOut", "ExecutionTimedOut", 137)
    # Used up: the next command succeeds; the other instance's outcome is still there.
    assert ended(ssm, send(ssm, [iid])["CommandId"], iid)["Status"] == "Success"
    assert [o["instance_id"] for o in emu.ok("GET", "ssm/outcomes")["outcomes"]] == ["i-0000000000000abcd"]
    emu.ok("POST", "reset")
    assert emu.ok("GET", "ssm/outcomes") == {"outcomes": []}


@pytest.mark.parametrize(
    "body",
    [
        {"status": "Cancelled"},
        {"status": "Success", "response_code": 1},
        {"status": "Failed", "response_code": 0},
        {"status": "Failed", "secs": -1},
        {"status": "Failed", "count": 0},
        {"status": "Failed", "exit": 3},
        {"status": "Failed", "stdout": 3},
    ],
)
def test_bad_outcomes_are_refused(emu, body):
    status, answer = emu.control("POST", "ssm/outcomes", body)
    assert status == 400 and answer["error"]
    assert emu.ok("GET", "ssm/outcomes") == {"outcomes": []}


def test_send_command_needs_a_running_instance(emu, ssm, ec2):
    emu.ok("POST", "config", {"instance_stopping_secs": 0.2})
    running, stopped, terminated = launch(ec2, 3)
    ec2.stop_instances(InstanceIds=[stopped])
    ec2.terminate_instances(InstanceIds=[terminated])
    for bad in (stopped, terminated, "i-0123456789abcdef0"):
        with pytest.raises(ClientError) as err:
            send(ssm, [running, bad])
        assert err.value.response["Error"]["Code"] == "InvalidInstanceId"
        assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
        assert bad in err.value.response["Error"]["Message"]
    wait_until(lambda: ec2.describe_instances(InstanceIds=[stopped])["Reservations"][0]["Instances"][0]["State"]["Name"] == "stopped")
    assert code_of(lambda: send(ssm, [stopped])) == "InvalidInstanceId"
    assert ssm.list_commands()["Commands"] == []
    calls = emu.ok("GET", "calls?service=ssm&action=SendCommand")["calls"]
    assert {c["error_code"] for c in calls} == {"InvalidInstanceId"}
    # The document is checked first, as before.
    assert code_of(lambda: ssm.send_command(DocumentName="no-such-doc", InstanceIds=[stopped])) == "InvalidDocument"


def test_an_instance_stopped_while_its_command_runs_leaves_it_in_progress_until_expiry(emu, ssm, ec2):
    # AWS: nobody reports for a node whose agent went away; the invocation stays InProgress
    # until the command expires (an hour and more by default, 2.5 s here).
    emu.ok("POST", "config", dict(QUICK, ssm_command_secs=10.0, ssm_expiry_secs=2.5, instance_stopping_secs=0.1))
    (iid,) = launch(ec2)
    cid = send(ssm, [iid])["CommandId"]
    wait_until(lambda: (invocation(ssm, cid, iid) or {}).get("Status") == "InProgress", timeout=2)
    ec2.stop_instances(InstanceIds=[iid])
    time.sleep(0.4)
    assert invocation(ssm, cid, iid)["Status"] == "InProgress"
    inv = ended(ssm, cid, iid, timeout=4)
    assert (inv["Status"], inv["StatusDetails"], inv["ResponseCode"]) == ("TimedOut", "DeliveryTimedOut", -1)
    (listed,) = ssm.list_commands(CommandId=cid)["Commands"]
    assert (listed["Status"], listed["StatusDetails"], listed["DeliveryTimedOutCount"]) == ("TimedOut", "DeliveryTimedOut", 1)


def test_a_command_not_yet_picked_up_is_delayed_by_a_stop_and_runs_after_a_start(emu, ssm, ec2):
    emu.ok("POST", "config", dict(QUICK, ssm_pending_secs=1.5, instance_stopping_secs=0.1))
    stopped, terminated = launch(ec2, 2)
    sent = time.monotonic()
    cid = send(ssm, [stopped, terminated])["CommandId"]
    ec2.stop_instances(InstanceIds=[stopped])
    ec2.terminate_instances(InstanceIds=[terminated])
    assert invocation(ssm, cid, stopped)["Status"] == "Delayed"
    assert invocation(ssm, cid, terminated)["StatusDetails"] == "Delayed"
    wait_until(lambda: ec2.describe_instances(InstanceIds=[stopped])["Reservations"][0]["Instances"][0]["State"]["Name"] == "stopped")
    time.sleep(max(0.0, sent + 1.7 - time.monotonic()))  # past the time it would have been picked up
    assert invocation(ssm, cid, stopped)["Status"] == "Delayed"
    ec2.start_instances(InstanceIds=[stopped])
    assert ended(ssm, cid, stopped)["Status"] == "Success"
    assert invocation(ssm, cid, terminated)["Status"] == "Delayed"


def test_a_script_longer_than_its_execution_timeout_times_out(emu, ssm, ec2):
    emu.ok("POST", "config", QUICK)
    (iid,) = launch(ec2)
    emu.ok("POST", "ssm/outcomes", {"status": "Success", "secs": 5})
    started = time.monotonic()
    cid = send(ssm, [iid], Parameters={"commands": ["sleep 5"], "executionTimeout": ["1"]})["CommandId"]
    inv = ended(ssm, cid, iid, timeout=4)
    assert (inv["Status"], inv["StatusDetails"], inv["ResponseCode"]) == ("TimedOut", "ExecutionTimedOut", 137)
    assert 0.9 < time.monotonic() - started < 3


def test_expires_after_is_timeout_plus_execution_timeout(emu, ssm, ec2):
    (iid,) = launch(ec2)
    command = send(ssm, [iid], TimeoutSeconds=600, Parameters={"commands": ["true"], "executionTimeout": ["120"]})
    assert command["ExpiresAfter"] - command["RequestedDateTime"] == dt.timedelta(seconds=720)
    (listed,) = ssm.list_commands(InstanceId=iid)["Commands"]
    assert listed["ExpiresAfter"] == command["ExpiresAfter"]


def test_list_command_invocations(emu, ssm, ec2):
    emu.ok("POST", "config", QUICK)
    a, b = launch(ec2, 2)
    emu.ok("POST", "ssm/outcomes", {"instance_id": b, "status": "Failed", "stdout": "out", "stderr": "err"})
    first = send(ssm, [a, b], Comment="first")["CommandId"]
    ended(ssm, first, a), ended(ssm, first, b)
    second = send(ssm, [a], Comment="second")["CommandId"]
    ended(ssm, second, a)
    every = ssm.list_command_invocations()["CommandInvocations"]
    assert [(i["CommandId"], i["InstanceId"]) for i in every] == [(second, a), (first, a), (first, b)]
    assert [i["Comment"] for i in every] == ["second", "first", "first"]
    assert all("CommandPlugins" not in i or i["CommandPlugins"] == [] for i in every)
    (mine,) = ssm.list_command_invocations(CommandId=first, InstanceId=b, Details=True)["CommandInvocations"]
    assert (mine["Status"], mine["StatusDetails"]) == ("Failed", "Failed")
    (plugin,) = mine["CommandPlugins"]
    assert plugin["Name"] == "aws:runShellScript" and plugin["ResponseCode"] == 1
    assert plugin["Output"] == "out\n----------ERROR-------\nerr"
    assert plugin["ResponseStartDateTime"] <= plugin["ResponseFinishDateTime"]
    failed = ssm.list_command_invocations(Filters=[{"key": "Status", "value": "Failed"}])["CommandInvocations"]
    assert [(i["CommandId"], i["InstanceId"]) for i in failed] == [(first, b)]
    page = ssm.list_command_invocations(MaxResults=2)
    assert len(page["CommandInvocations"]) == 2 and page["NextToken"]
    rest = ssm.list_command_invocations(MaxResults=2, NextToken=page["NextToken"])
    assert [i["InstanceId"] for i in rest["CommandInvocations"]] == [b] and "NextToken" not in rest
    assert code_of(lambda: ssm.list_command_invocations(Filters=[{"key": "Colour", "value": "x"}])) == "InvalidFilterKey"
    assert [c["CommandId"] for c in ssm.list_commands(InstanceId=b)["Commands"]] == [first]


def test_plugin_name_of_a_document(emu, ssm, ec2):
    emu.ok("POST", "config", QUICK)
    (iid,) = launch(ec2)
    cid = send(ssm, [iid])["CommandId"]
    ended(ssm, cid, iid)
    assert ssm.get_command_invocation(CommandId=cid, InstanceId=iid, PluginName="aws:runShellScript")["Status"] == "Success"
    assert code_of(lambda: ssm.get_command_invocation(CommandId=cid, InstanceId=iid, PluginName="other")) == "InvalidPluginName"
    other = launch(ec2)[0]
    assert code_of(lambda: ssm.get_command_invocation(CommandId=cid, InstanceId=other)) == "InvocationDoesNotExist"


def test_a_document_of_several_steps_needs_the_step_named(emu, ssm, ec2):
    # AWS-RunPatchBaseline has a step per platform; GetCommandInvocation must name one
    # (API reference, PluginName). The instance is Linux: PatchLinux runs, the others skip.
    emu.ok("POST", "config", QUICK)
    (iid,) = launch(ec2)
    emu.ok("POST", "ssm/outcomes", {"status": "Failed", "response_code": 1, "stderr": "no space left"})
    cid = ssm.send_command(DocumentName="AWS-RunPatchBaseline", InstanceIds=[iid], Parameters={"Operation": ["Install"]})[
        "Command"
    ]["CommandId"]
    linux = wait_until(
        lambda: (lambda i: i if i["Status"] == "Failed" else None)(
            ssm.get_command_invocation(CommandId=cid, InstanceId=iid, PluginName="PatchLinux")
        ),
        timeout=5,
    )
    assert (linux["ResponseCode"], linux["StandardErrorContent"], linux["PluginName"]) == (1, "no space left", "PatchLinux")
    assert code_of(lambda: ssm.get_command_invocation(CommandId=cid, InstanceId=iid)) == "InvalidPluginName"
    windows = ssm.get_command_invocation(CommandId=cid, InstanceId=iid, PluginName="PatchWindows")
    assert (windows["Status"], windows["ResponseCode"]) == ("Success", 0)
    assert "skipped" in windows["StandardOutputContent"]
    (listed,) = ssm.list_command_invocations(CommandId=cid, Details=True)["CommandInvocations"]
    assert listed["Status"] == "Failed"
    assert [(p["Name"], p["Status"]) for p in listed["CommandPlugins"]] == [
        ("PatchWindows", "Success"),
        ("PatchLinux", "Failed"),
        ("PatchMacOS", "Success"),
    ]
