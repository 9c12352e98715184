"""Auto Scaling actions the emulator serves itself, on top of moto's response class.

Parameters are parsed and results serialised by moto (from the botocore service model);
the state changes go to moto's models plus ``hooks``, ``scaling`` and ``refresh``.
"""

from __future__ import annotations

from typing import Any

from moto.autoscaling.exceptions import AutoscalingClientError, ValidationError
from moto.autoscaling.models import ASG_NAME_TAG, InstanceState
from moto.autoscaling.responses import AutoScalingResponse
from moto.core.responses import ActionResult, EmptyResult

from .hook_specs import put_hook, send_test_notification
from .hooks import find_state
from .notify import LAUNCHING
from .scaling import PROCESSES, suspended
from .state import emulator
from .util import iso_seconds, new_uuid, naive_utc, utcnow


class LifeguardAutoScalingResponse(AutoScalingResponse):
    INTERCEPTED = frozenset(
        {
            "CreateAutoScalingGroup",
            "UpdateAutoScalingGroup",
            "SetDesiredCapacity",
            "DeleteAutoScalingGroup",
            "TerminateInstanceInAutoScalingGroup",
            "DetachInstances",
            "AttachInstances",
            "EnterStandby",
            "ExitStandby",
            "SuspendProcesses",
            "ResumeProcesses",
            "PutLifecycleHook",
            "DeleteLifecycleHook",
            "CompleteLifecycleAction",
            "RecordLifecycleActionHeartbeat",
            "StartInstanceRefresh",
            "DescribeInstanceRefreshes",
            "CancelInstanceRefresh",
            "RollbackInstanceRefresh",
        }
    )

    # ------------------------------------------------------------- helpers
    def _group(self, name: str | None = None) -> Any:
        name = name if name is not None else self._get_param("AutoScalingGroupName")
        group = self.autoscaling_backend.autoscaling_groups.get(name)
        if group is None:
            raise ValidationError(f"AutoScalingGroup name not found - AutoScalingGroup '{name}' not found")
        return group

    def _states(self, group: Any, instance_ids: list[str], allowed: set[str]) -> list[Any]:
        states = []
        for instance_id in instance_ids:
            state = find_state(group, instance_id)
            if state is None:
                raise ValidationError(f"The instance {instance_id} is not part of Auto Scaling group {group.name}.")
            if state.lifecycle_state not in allowed:
                raise ValidationError(
                    f"The instance {instance_id} is not in {' or '.join(sorted(allowed))} state "
                    f"(current state: {state.lifecycle_state})."
                )
            states.append(state)
        return states

    # ------------------------------------------------------------- groups
    def create_auto_scaling_group(self) -> ActionResult:
        name = self._get_param("AutoScalingGroupName")
        backend = self.autoscaling_backend
        if name in backend.autoscaling_groups:
            raise AutoscalingClientError(
                "AlreadyExists", f"AutoScalingGroup by this name already exists - A group with the name {name} already exists"
            )
        specs = self._get_param("LifecycleHookSpecificationList", []) or []
        added = []
        try:
            for spec in specs:
                added.append(put_hook(backend, name, spec)[0])
            result = super().create_auto_scaling_group()
        except Exception:
            for hook in added:
                backend.lifecycle_hooks.pop(f"{name}_{hook.name}", None)
            raise
        group = backend.autoscaling_groups[name]
        for hook in added:
            send_test_notification(backend, group, hook)
        return result

    def update_auto_scaling_group(self) -> ActionResult:
        group = self._group()
        desired = self._get_int_param("DesiredCapacity")
        min_size = self._get_int_param("MinSize")
        max_size = self._get_int_param("MaxSize")
        new_min = min_size if min_size is not None else group.min_size
        new_max = max_size if max_size is not None else group.max_size
        if new_min is not None and new_max is not None and new_min > new_max:
            raise ValidationError(f"Max bound, {new_max}, must be greater than or equal to min bound, {new_min}")
        if desired is None:
            current = group.desired_capacity or 0
            if min_size is not None and min_size > current:
                desired = min_size
            if max_size is not None and max_size < current:
                desired = max_size
        elif not (new_min <= desired <= new_max):
            raise ValidationError(
                f"Desired capacity:{desired} must be between the specified min size:{new_min} and max size:{new_max}"
            )
        mixed = self._get_param("MixedInstancesPolicy") or group.mixed_instances_policy
        self.autoscaling_backend.update_auto_scaling_group(
            name=group.name,
            availability_zones=self._get_param("AvailabilityZones", []),
            desired_capacity=desired,
            max_size=max_size,
            min_size=min_size,
            launch_config_name=self._get_param("LaunchConfigurationName"),
            launch_template=self._get_param("LaunchTemplate", {}),
            vpc_zone_identifier=self._get_param("VPCZoneIdentifier"),
            health_check_period=self._get_int_param("HealthCheckGracePeriod"),
            health_check_type=self._get_param("HealthCheckType"),
            new_instances_protected_from_scale_in=self._get_bool_param("NewInstancesProtectedFromScaleIn", None),
            mixed_instances_policy=mixed,
        )
        policies = self._get_param("TerminationPolicies")
        if policies:
            group.termination_policies = list(policies)
        return EmptyResult()

    def set_desired_capacity(self) -> ActionResult:
        group = self._group()
        desired = self._get_int_param("DesiredCapacity")
        if desired is not None and group.max_size is not None and desired > group.max_size:
            raise ValidationError(
                f"New SetDesiredCapacity value {desired} is above max value {group.max_size} for the AutoScalingGroup."
            )
        if desired is not None and group.min_size is not None and desired < group.min_size:
            raise ValidationError(
                f"New SetDesiredCapacity value {desired} is below min value {group.min_size} for the AutoScalingGroup."
            )
        return super().set_desired_capacity()

    def delete_auto_scaling_group(self) -> ActionResult:
        group = self._group()
        emu = emulator()
        backend = self.autoscaling_backend
        if not self._get_bool_param("ForceDelete", False):
            if group.instance_states:
                raise AutoscalingClientError(
                    "ResourceInUse",
                    "You cannot delete an AutoScalingGroup while there are instances or pending Spot "
                    "instance request(s) still in the group.",
                )
        else:
            # Force delete: every instance is terminated at once, lifecycle hooks bypassed.
            states = list(group.instance_states)
            emu.phases.finish_termination(group, states)
        emu.refresh.forget_group(backend, group.name)
        for key in [k for k, h in backend.lifecycle_hooks.items() if h.auto_scaling_group_name == group.name]:
            del backend.lifecycle_hooks[key]
        return super().delete_auto_scaling_group()

    def _processes(self) -> None:
        """SuspendProcesses / ResumeProcesses: the group must exist and every name be a
        process (none = all of them, as AWS has it)."""
        self._group()
        names = self._get_param("ScalingProcesses", []) or []
        unknown = [n for n in names if n not in PROCESSES]
        if unknown:
            raise ValidationError(
                f"Invalid scaling process name(s): {', '.join(unknown)}. "
                f"Valid process names are: {', '.join(PROCESSES)}."
            )

    def suspend_processes(self) -> ActionResult:
        self._processes()
        return super().suspend_processes()

    def resume_processes(self) -> ActionResult:
        """What was held runs at once: the health check looks again at members gone from EC2
        meanwhile, ReplaceUnhealthy replaces the instances marked Unhealthy, capacity is
        re-evaluated. Instances that went InService while AddToLoadBalancer was suspended
        stay out of the target groups (scaling.py)."""
        self._processes()
        result = super().resume_processes()
        group = self._group()
        emu = emulator()
        emu.phases.recheck_health(group)
        emu.phases.replace_unhealthy(group)
        emu.scaler.reconcile(group)
        return result

    # ----------------------------------------------------------- instances
    def terminate_instance_in_auto_scaling_group(self) -> ActionResult:
        instance_id = self._get_param("InstanceId")
        decrement = self._get_bool_param("ShouldDecrementDesiredCapacity", False)
        group = state = None
        for candidate in self.autoscaling_backend.autoscaling_groups.values():
            state = find_state(candidate, instance_id)
            if state is not None:
                group = candidate
                break
        if group is None or state is None:
            raise ValidationError(f"Instance Id not found - No managed instance found for instance ID: {instance_id}")
        original = group.desired_capacity
        cause = f"At {iso_seconds()} instance {instance_id} was taken out of service in response to a user request"
        if not state.lifecycle_state.startswith("Terminating"):
            counted = state.lifecycle_state not in ("Standby",)
            if decrement and counted:
                if (group.desired_capacity or 0) - 1 < (group.min_size or 0):
                    raise ValidationError(
                        f"Currently, desiredCapacity={group.desired_capacity} and minSize={group.min_size}. "
                        "Terminating instance without replacement will violate group's min size constraint. "
                        "Either set shouldDecrementDesiredCapacity flag to false or lower group's min size."
                    )
                group.desired_capacity -= 1
            if group.desired_capacity != original:
                cause += f", shrinking the capacity from {original} to {group.desired_capacity}."
            else:
                cause += "."
            emulator().phases.begin_terminate(group, [state], cause)
            emulator().scaler.reconcile(group)
        elif not cause.endswith("."):
            cause += "."
        return ActionResult({"Activity": activity(group, f"Terminating EC2 instance: {instance_id}", cause)})

    def detach_instances(self) -> ActionResult:
        group = self._group()
        ids = self._get_param("InstanceIds", []) or []
        self._states(group, ids, {"InService", "Standby"})
        decrement = self._get_bool_param("ShouldDecrementDesiredCapacity", False)
        if decrement and (group.desired_capacity or 0) - len(ids) < (group.min_size or 0):
            raise ValidationError(
                f"Detaching {len(ids)} instance(s) with ShouldDecrementDesiredCapacity would violate the "
                f"group's min size constraint (desired {group.desired_capacity}, min {group.min_size})."
            )
        emu = emulator()
        for instance_id in ids:
            emu.phases.forget_instance(instance_id)
            rec = emu.records.get(instance_id)
            if rec is None:
                rec = emu.record(instance_id, self.current_account, self.region)
                rec.group_name = group.name
            rec.target_state = "Detached"
        return super().detach_instances()

    def attach_instances(self) -> ActionResult:
        """Attached instances add to the desired capacity and go InService at once: lifecycle
        hooks do not run for attached instances (moto sets desired to the number of
        instances). Refused while the group's Launch process is suspended (User Guide,
        "Suspending and resuming scaling processes", Additional considerations: "you can't
        attach new instances to the group. To attach instances, you must first resume
        Launch"); the message is the emulator's, after ExitStandby's."""
        group = self._group()
        if "Launch" in suspended(group):
            raise ValidationError(
                f"Cannot attach instances to AutoScalingGroup {group.name} while the Launch process is suspended"
            )
        backend = self.autoscaling_backend
        ids = self._get_param("InstanceIds", []) or []
        instances = []
        for instance_id in ids:
            instance = backend.ec2_backend.get_instance(instance_id)
            if instance.state != "running":
                raise ValidationError(f"Instance {instance_id} is not in a valid state (running) to be attached.")
            if any(find_state(g, instance_id) for g in backend.autoscaling_groups.values()):
                raise ValidationError(f"The instance {instance_id} is already part of an Auto Scaling group.")
            instances.append(instance)
        desired = (group.desired_capacity or 0) + len(ids)
        if group.max_size is not None and desired > group.max_size:
            raise ValidationError(
                f"AutoScalingGroup: {group.name} has max-size {group.max_size} and desired capacity "
                f"{group.desired_capacity}; attaching {len(ids)} instance(s) would exceed the max size."
            )
        group.desired_capacity = desired
        emu = emulator()
        states = []
        for instance in instances:
            instance.autoscaling_group = group
            state = InstanceState(
                instance,
                protected_from_scale_in=group.new_instances_protected_from_scale_in,
                autoscaling_group=group,
            )
            group.instance_states.append(state)
            states.append(state)
            backend.ec2_backend.create_tags([instance.id], {ASG_NAME_TAG: group.name})
            rec = emu.record(instance.id, self.current_account, self.region)
            rec.group_name = group.name
            rec.target_state = None
            rec.instance = instance
        backend.update_attached_elbs(group.name)
        backend.update_attached_target_groups(group.name)
        return EmptyResult()

    def enter_standby(self) -> ActionResult:
        group = self._group()
        self._states(group, self._get_param("InstanceIds", []) or [], {"InService"})
        return super().enter_standby()

    def exit_standby(self) -> ActionResult:
        """Back to InService at once: lifecycle hooks do not run for standby moves. Refused
        while the Launch process is suspended, with AWS's message."""
        group = self._group()
        if "Launch" in suspended(group):
            raise ValidationError(
                f"Cannot move instances out of Standby for AutoScalingGroup {group.name} "
                "while the Launch process is suspended"
            )
        self._states(group, self._get_param("InstanceIds", []) or [], {"Standby"})
        return super().exit_standby()

    # ------------------------------------------------------- lifecycle hooks
    def put_lifecycle_hook(self) -> ActionResult:
        group = self._group()
        spec = {
            k: self._get_param(k)
            for k in (
                "LifecycleHookName",
                "LifecycleTransition",
                "RoleARN",
                "NotificationTargetARN",
                "NotificationMetadata",
                "HeartbeatTimeout",
                "DefaultResult",
            )
        }
        hook, test_message = put_hook(self.autoscaling_backend, group.name, spec)
        if test_message:
            send_test_notification(self.autoscaling_backend, group, hook)
        return EmptyResult()

    def delete_lifecycle_hook(self) -> ActionResult:
        group = self._group()
        name = self._get_param("LifecycleHookName")
        key = f"{group.name}_{name}"
        backend = self.autoscaling_backend
        if key not in backend.lifecycle_hooks:
            raise ValidationError(f"No Lifecycle Hook found with name {name} for group {group.name}")
        emu = emulator()
        # Outstanding actions are completed first: ABANDON for launches, CONTINUE for
        # terminations (DeleteLifecycleHook API reference).
        for action in emu.lifecycle.forget_hook(backend, group.name, name):
            emu.lifecycle.complete(action, "ABANDON" if action.transition == LAUNCHING else "CONTINUE")
        del backend.lifecycle_hooks[key]
        return EmptyResult()

    def _action(self) -> Any:
        token = self._get_param("LifecycleActionToken")
        if token is not None and len(token) != 36:
            raise ValidationError(
                f"1 validation error detected: Value '{token}' at 'lifecycleActionToken' failed to satisfy "
                "constraint: Member must have length greater than or equal to 36"
            )
        return emulator().lifecycle.lookup(
            self.autoscaling_backend,
            self._get_param("AutoScalingGroupName"),
            self._get_param("LifecycleHookName"),
            self._get_param("InstanceId"),
            token,
        )

    def complete_lifecycle_action(self) -> ActionResult:
        result = self._get_param("LifecycleActionResult")
        if result not in ("CONTINUE", "ABANDON"):
            raise ValidationError("Valid values for LifecycleActionResult are CONTINUE and ABANDON")
        action = self._action()
        emulator().lifecycle.complete(action, result)
        return EmptyResult()

    def record_lifecycle_action_heartbeat(self) -> ActionResult:
        emulator().lifecycle.heartbeat(self._action())
        return EmptyResult()

    # ------------------------------------------------------- instance refresh
    def start_instance_refresh(self) -> ActionResult:
        group = self._group()
        strategy = self._get_param("Strategy") or "Rolling"
        if strategy != "Rolling":
            raise ValidationError(f"Strategy {strategy} is not supported")
        refresh_id = emulator().refresh.start(
            self.autoscaling_backend,
            group,
            self._get_param("Preferences") or {},
            self._get_param("DesiredConfiguration") or {},
        )
        return ActionResult({"InstanceRefreshId": refresh_id})

    def describe_instance_refreshes(self) -> ActionResult:
        group = self._group()
        refreshes = emulator().refresh.describe(
            self.autoscaling_backend, group.name, self._get_param("InstanceRefreshIds", []) or []
        )
        max_records = self._get_int_param("MaxRecords") or 50
        start = int(self._get_param("NextToken") or 0)
        page = refreshes[start : start + max_records]
        token = str(start + max_records) if start + max_records < len(refreshes) else None
        return ActionResult({"InstanceRefreshes": page, "NextToken": token})

    def cancel_instance_refresh(self) -> ActionResult:
        group = self._group()
        wait = self._get_bool_param("WaitForTransitioningInstances", True)
        refresh_id = emulator().refresh.cancel(self.autoscaling_backend, group, wait)
        return ActionResult({"InstanceRefreshId": refresh_id})

    def rollback_instance_refresh(self) -> ActionResult:
        group = self._group()
        refresh_id = emulator().refresh.rollback(self.autoscaling_backend, group)
        return ActionResult({"InstanceRefreshId": refresh_id})


def activity(group: Any, description: str, cause: str) -> dict[str, Any]:
    return {
        "ActivityId": new_uuid(),
        "AutoScalingGroupName": group.name,
        "Description": description,
        "Cause": cause,
        "StartTime": naive_utc(utcnow()),
        "StatusCode": "InProgress",
        "Progress": 0,
        "Details": "{}",
        "AutoScalingGroupARN": group.arn,
    }
