"""Auto Scaling launch configurations as AWS keeps them (Auto Scaling API reference:
CreateLaunchConfiguration, DeleteLaunchConfiguration, DescribeLaunchConfigurations,
UpdateAutoScalingGroup; the LaunchConfiguration data type).

moto 5.2.5 differs from AWS, and ``install`` makes it AWS-like:

* CreateLaunchConfiguration with a name in use replaces the old one silently; AWS answers
  ``AlreadyExists``.
* A string member sent empty where the API model needs at least one character
  (``KernelId``, ``RamdiskId``, ``KeyName``, ``ImageId``, ``IamInstanceProfile``,
  ``SpotPrice``, ``ClassicLinkVPCId``, ``PlacementTenancy``, ...) is accepted by moto; AWS
  answers ``ValidationError`` "1 validation error detected: Value '' at 'kernelId' failed to
  satisfy constraint: Member must have length greater than or equal to 1". ``UserData`` may
  be empty.
* DescribeLaunchConfigurations leaves out ``KernelId``, ``RamdiskId``, ``KeyName`` and
  ``UserData`` when they were not given; AWS returns them as empty strings (and
  ``ClassicLinkVPCSecurityGroups`` as an empty list), so a copy made field by field from a
  describe answer sends empty strings -- and fails as above, on AWS as here.
* ``InstanceMonitoring`` not given is ``{"Enabled": true}`` (AWS's default; moto: false).
* DeleteLaunchConfiguration of one that a group uses succeeds in moto; AWS answers
  ``ResourceInUse``. Of an unknown name moto says nothing; AWS answers ``ValidationError``.
* UpdateAutoScalingGroup (and CreateAutoScalingGroup) with ``LaunchConfigurationName``:
  moto keeps a launch template the group had (which then still wins) and fails with an
  internal error for an unknown name. Here the group switches: a launch configuration
  replaces the launch template and the other way round, so new instances are launched from
  the new one; an unknown name → ``ValidationError``.
"""

from __future__ import annotations

import functools
from typing import Any

_LC_FIELDS_EMPTY_WHEN_UNSET = ("kernel_id", "ramdisk_id", "key_name", "user_data")


def _validation(message: str) -> Exception:
    from moto.autoscaling.exceptions import ValidationError

    return ValidationError(message)


def _client_error(code: str, message: str) -> Exception:
    from moto.autoscaling.exceptions import AutoscalingClientError

    return AutoscalingClientError(code, message)


def _lower_first(name: str) -> str:
    return name[:1].lower() + name[1:]


@functools.lru_cache(maxsize=1)
def _min_lengths() -> tuple[tuple[str, int], ...]:
    """(member, least length) of CreateLaunchConfiguration's top-level string members."""
    import botocore.session

    shape = botocore.session.get_session().get_service_model("autoscaling").operation_model(
        "CreateLaunchConfiguration"
    ).input_shape
    return tuple(
        (name, int(member.metadata["min"]))
        for name, member in shape.members.items()
        if member.type_name == "string" and member.metadata.get("min")
    )


def check_min_lengths(querystring: dict[str, list[str]]) -> None:
    """ValidationError for top-level string members sent shorter than the API model allows
    (AWS's wording; several at once are listed together)."""
    problems = []
    for name, minimum in _min_lengths():
        values = querystring.get(name)
        if values is None:
            continue
        value = values[0] if values else ""
        if len(value) < int(minimum):
            problems.append(
                f"Value '{value}' at '{_lower_first(name)}' failed to satisfy constraint: "
                f"Member must have length greater than or equal to {minimum}"
            )
    if problems:
        count = len(problems)
        noun = "validation error" if count == 1 else "validation errors"
        raise _validation(f"{count} {noun} detected: " + "; ".join(problems))


def install() -> None:
    from moto.autoscaling import models as asg_models
    from moto.autoscaling.responses import AutoScalingResponse

    original_create = AutoScalingResponse.create_launch_configuration
    original_set = asg_models.FakeAutoScalingGroup._set_launch_configuration

    def create_launch_configuration(self: Any) -> Any:
        name = self._get_param("LaunchConfigurationName")
        backend = self.autoscaling_backend
        if name in backend.launch_configurations:
            raise _client_error(
                "AlreadyExists",
                f"Launch Configuration by this name already exists - A launch configuration already exists with the name {name}",
            )
        check_min_lengths(self.querystring)
        result = original_create(self)
        config = backend.launch_configurations.get(name)
        if config is not None:
            for field in _LC_FIELDS_EMPTY_WHEN_UNSET:
                if getattr(config, field, None) is None:
                    setattr(config, field, "")
            if config.classic_link_vpc_security_groups is None:
                config.classic_link_vpc_security_groups = []
            if "InstanceMonitoring.Enabled" not in self.querystring:
                config.instance_monitoring_enabled = True
        return result

    def delete_launch_configuration(self: Any, launch_configuration_name: str) -> None:
        if launch_configuration_name not in self.launch_configurations:
            raise _validation(
                f"Launch configuration name not found - Launch configuration {launch_configuration_name} not found"
            )
        for group in self.autoscaling_groups.values():
            if getattr(group, "launch_configuration_name", None) == launch_configuration_name and group.launch_config:
                raise _client_error(
                    "ResourceInUse",
                    f"Cannot delete launch configuration {launch_configuration_name} because it is attached to "
                    f"AutoScalingGroup {group.name}",
                )
        del self.launch_configurations[launch_configuration_name]

    def set_launch_configuration(
        self: Any, launch_config_name: str, launch_template: dict[str, Any], mixed_instances_policy: Any
    ) -> None:
        if launch_config_name and launch_config_name not in self.autoscaling_backend.launch_configurations:
            raise _validation(
                f"Launch configuration name not found - Launch configuration {launch_config_name} not found"
            )
        original_set(self, launch_config_name, launch_template, mixed_instances_policy)
        if launch_config_name and not launch_template and not mixed_instances_policy:
            # From a launch template to a launch configuration: the template no longer applies.
            self.ec2_launch_template = None
            self.launch_template_version = None
            self.provided_launch_template_version = None
        elif launch_template and not launch_config_name:
            # From a launch configuration to a launch template.
            self.launch_config = None
            self.launch_configuration_name = None

    AutoScalingResponse.create_launch_configuration = create_launch_configuration  # type: ignore[method-assign]
    asg_models.AutoScalingBackend.delete_launch_configuration = delete_launch_configuration  # type: ignore[method-assign]
    asg_models.FakeAutoScalingGroup._set_launch_configuration = set_launch_configuration  # type: ignore[method-assign]
