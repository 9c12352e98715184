"""EC2 actions the emulator serves itself, on top of moto's EC2 response class and models."""

from __future__ import annotations

from typing import Any

from moto.core.responses import ActionResult
from moto.ec2.exceptions import EC2ClientError, InvalidParameterCombination, MissingParameterError
from moto.ec2.responses import EC2Response

from . import ec2_instances, launch_templates, snapshots
from .state import emulator


class LifeguardEC2Response(EC2Response):
    INTERCEPTED = frozenset(
        {
            "CreateImage",
            "RegisterImage",
            "CopyImage",
            "DeregisterImage",
            "CreateLaunchTemplateVersion",
            "DeleteLaunchTemplateVersions",
            "RunInstances",
        }
    )

    # --------------------------------------------------------------- instances
    def run_instances(self) -> ActionResult:
        """``ClientToken`` makes the call idempotent (see ec2_instances.py)."""
        token = self._get_param("ClientToken")
        earlier = ec2_instances.earlier_reservation(self.ec2_backend, token, self.querystring)
        if earlier is not None:
            self.error_on_dryrun()
            return ActionResult(earlier)
        result = super().run_instances()
        ec2_instances.remember_reservation(self.ec2_backend, token, self.querystring, result.result)
        return result

    # ------------------------------------------------------------------ images
    def _track(self, result: ActionResult, own_snapshots: bool) -> ActionResult:
        image_id = result.result.get("ImageId") if isinstance(result.result, dict) else None
        if image_id:
            emulator().images.track_new(self.ec2_backend, image_id, own_snapshots)
        return result

    def create_image(self) -> ActionResult:
        # moto raises NotImplementedError for a `snapshot` tag specification and accepts a name
        # already in use; AWS tags the new snapshots and refuses the name
        # (InvalidAMIName.Duplicate), which is what makes a retried CreateImage safe.
        name = self._get_param("Name")
        for ami in self.ec2_backend.amis.values():
            if ami.name == name and str(ami.owner_id) == str(self.current_account):
                raise EC2ClientError(
                    "InvalidAMIName.Duplicate", f"AMI name {name} is already in use by AMI {ami.id}"
                )
        specs = self._get_param("TagSpecifications", [])
        snapshot_tags = {
            tag["Key"]: tag.get("Value", "")
            for spec in specs
            if spec.get("ResourceType") == "snapshot"
            for tag in spec.get("Tags", [])
        }
        self.error_on_dryrun()
        image = self.ec2_backend.create_image(
            self._get_param("InstanceId"),
            name,
            self._get_param("Description", ""),
            tag_specifications=[spec for spec in specs if spec.get("ResourceType") != "snapshot"],
        )
        if snapshot_tags:
            ids = [snap.id for snap in snapshots.image_snapshots(self.ec2_backend, image.id)]
            if ids:
                self.ec2_backend.create_tags(ids, snapshot_tags)
        return self._track(ActionResult({"ImageId": image.id}), own_snapshots=True)

    def register_image(self) -> ActionResult:
        return self._track(super().register_image(), own_snapshots=False)

    def copy_image(self) -> ActionResult:
        return self._track(super().copy_image(), own_snapshots=True)

    def deregister_image(self) -> ActionResult:
        image_id = self._get_param("ImageId")
        result = super().deregister_image()
        emulator().images.deregistered(self.ec2_backend, image_id)
        return result

    # -------------------------------------------------------- launch templates
    def _template(self) -> Any:
        name = self._get_param("LaunchTemplateName")
        template_id = self._get_param("LaunchTemplateId")
        if name and template_id:
            raise InvalidParameterCombination(
                "The parameters LaunchTemplateName and LaunchTemplateId cannot be specified together."
            )
        if template_id:
            return self.ec2_backend.get_launch_template(template_id)
        if name:
            return self.ec2_backend.get_launch_template_by_name(name)
        raise MissingParameterError("launch template ID or launch template name")

    def _version_result(self, template: Any, version: Any) -> ActionResult:
        return ActionResult(
            {
                "LaunchTemplateVersion": {
                    "CreateTime": version.create_time,
                    "CreatedBy": f"arn:{self.partition}:iam::{self.current_account}:root",
                    "DefaultVersion": template.is_default(version),
                    "LaunchTemplateData": version.data,
                    "LaunchTemplateId": template.id,
                    "LaunchTemplateName": template.name,
                    "VersionDescription": version.description,
                    "VersionNumber": version.number,
                }
            }
        )

    def create_launch_template_version(self) -> ActionResult:
        template = self._template()
        token = self._get_param("ClientToken")
        fingerprint = launch_templates.version_request_fingerprint(
            template.id,
            self._get_param("SourceVersion"),
            self._get_param("VersionDescription"),
            self._get_param("LaunchTemplateData", {}),
            self._get_param("ResolveAlias"),
        )
        earlier = launch_templates.earlier_version(self.ec2_backend, token, fingerprint) if token else None
        if earlier is not None:
            self.error_on_dryrun()
            return self._version_result(*earlier)
        data = launch_templates.version_data(
            template, self._get_param("SourceVersion"), self._get_param("LaunchTemplateData", {})
        )
        self.error_on_dryrun()
        version = template.create_version(data, self._get_param("VersionDescription"))
        if token:
            launch_templates.remember_version(self.ec2_backend, token, fingerprint, template, version)
        return self._version_result(template, version)

    def delete_launch_template_versions(self) -> ActionResult:
        template = self._template()
        versions = [str(v) for v in self._get_param("Versions", []) or []]
        if not versions:
            raise MissingParameterError("LaunchTemplateVersion")
        if len(versions) > launch_templates.MAX_DELETE:
            raise InvalidParameterCombination("You can delete up to 200 launch template versions in a single request.")
        self.error_on_dryrun()
        ok, bad = launch_templates.delete_versions(template, versions)
        return ActionResult(
            {
                "SuccessfullyDeletedLaunchTemplateVersions": ok,
                "UnsuccessfullyDeletedLaunchTemplateVersions": bad,
            }
        )
