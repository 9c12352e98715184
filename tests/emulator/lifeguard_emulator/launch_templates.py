"""Launch template versions the way EC2 numbers them (EC2 API reference:
CreateLaunchTemplateVersion ``SourceVersion`` and ``ClientToken``,
DeleteLaunchTemplateVersions).

moto keeps versions in a list and finds version N at index N-1, so deleting a version
would shift every later one. ``install`` makes lookups go by version number and new
versions take max(number ever used)+1, as EC2 never reuses a deleted number.

moto ignores ``ClientToken``; EC2 makes the call idempotent with it (EC2 API reference:
CreateLaunchTemplateVersion, and "Ensure idempotency in Amazon EC2 API requests"), so a
client that retries after a lost answer does not get a second version. The tokens are
kept per account and region on moto's EC2 backend, so moto's reset forgets them.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from moto.ec2.exceptions import EC2ClientError, InvalidLaunchTemplateVersionNotFound
from moto.ec2.utils import parse_user_data

MAX_DELETE = 200


def _number(value: Any) -> int | None:
    try:
        text = str(value).strip()
        return int(text) if text.isdigit() else None
    except Exception:
        return None


def install() -> None:
    from moto.ec2.models import launch_templates as lt_models

    LaunchTemplate = lt_models.LaunchTemplate
    Backend = lt_models.LaunchTemplateBackend

    def create_version(self: Any, data: dict[str, Any], description: str) -> Any:
        num = getattr(self, "_lg_max_number", len(self.versions)) + 1
        self._lg_max_number = num
        version = lt_models.LaunchTemplateVersion(self, num, data, description)
        self.versions.append(version)
        return version

    def find_version(self: Any, number: int) -> Any | None:
        for version in self.versions:
            if version.number == number:
                return version
        return None

    def get_version(self: Any, num: Any) -> Any:
        text = str(num).lower()
        if text == "$latest":
            return self.versions[-1]
        if text == "$default":
            return self.default_version()
        number = _number(num)
        version = find_version(self, number) if number is not None else None
        if version is None:
            raise InvalidLaunchTemplateVersionNotFound(template_id=self.id, version=num)
        return version

    def default_version(self: Any) -> Any:
        version = find_version(self, self.default_version_number)
        return version if version is not None else self.versions[-1]

    original_describe = Backend.describe_launch_template_versions

    def describe_launch_template_versions(
        self: Any,
        template_name: str,
        template_id: str,
        versions: list[str],
        min_version: int,
        max_version: int,
        max_results: int,
    ) -> list[Any]:
        if versions or not (min_version or max_version) or not (template_name or template_id):
            return original_describe(self, template_name, template_id, versions, min_version, max_version, max_results)
        template = (
            self.get_launch_template_by_name(template_name) if template_name else self.get_launch_template(template_id)
        )
        low = int(min_version or 0)
        high = int(max_version) if max_version else None
        picked = [
            (template, v) for v in template.versions if v.number >= low and (high is None or v.number <= high)
        ]
        return picked[: max_results or len(picked)]

    LaunchTemplate.create_version = create_version
    # moto copies a template's tags once, at creation: tags added later with CreateTags never
    # showed in DescribeLaunchTemplates. AWS shows the template's current tags.
    LaunchTemplate.tags = property(lambda self: self.get_tags(), lambda self, _value: None)
    LaunchTemplate.get_version = get_version
    LaunchTemplate.default_version = default_version
    Backend.describe_launch_template_versions = describe_launch_template_versions


def version_data(template: Any, source_version: str | None, data: dict[str, Any]) -> dict[str, Any]:
    """LaunchTemplateData of a new version: the source version's data with the given
    top-level fields replacing the source's ones (no merge inside a field)."""
    data = dict(data or {})
    if "UserData" in data:
        data["UserData"] = parse_user_data(data.get("UserData"))
    if source_version is None or str(source_version) == "":
        return data
    source = template.get_version(source_version)
    merged = copy.deepcopy(source.data)
    merged.update(data)
    return merged


class IdempotentParameterMismatch(EC2ClientError):
    """The token was used before with other parameters (HTTP 400, like every EC2 client error)."""

    def __init__(self) -> None:
        super().__init__(
            "IdempotentParameterMismatch",
            "Arguments on this idempotent request are inconsistent with arguments used in previous request(s).",
        )


def version_request_fingerprint(
    template_id: str, source_version: Any, description: Any, data: Any, resolve_alias: Any
) -> str:
    """What a CreateLaunchTemplateVersion asks for, apart from its token and DryRun; the
    template by id, so naming it by name or by id is the same request."""
    request = {
        "LaunchTemplateId": template_id,
        "SourceVersion": source_version,
        "VersionDescription": description,
        "LaunchTemplateData": data or {},
        "ResolveAlias": resolve_alias,
    }
    return json.dumps(request, sort_keys=True, default=str)


def _tokens(ec2_backend: Any) -> dict[str, tuple[str, Any, Any]]:
    tokens = getattr(ec2_backend, "_lg_version_tokens", None)
    if tokens is None:
        tokens = {}
        ec2_backend._lg_version_tokens = tokens
    return tokens


def earlier_version(ec2_backend: Any, token: str, fingerprint: str) -> tuple[Any, Any] | None:
    """(template, version) that an earlier call with ``token`` created, None for a new
    token; IdempotentParameterMismatch when that call asked for something else."""
    seen = _tokens(ec2_backend).get(token)
    if seen is None:
        return None
    if seen[0] != fingerprint:
        raise IdempotentParameterMismatch()
    return seen[1], seen[2]


def remember_version(ec2_backend: Any, token: str, fingerprint: str, template: Any, version: Any) -> None:
    _tokens(ec2_backend)[token] = (fingerprint, template, version)


def delete_versions(template: Any, versions: list[str]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Delete the listed versions; returns (successes, failures) in EC2's shapes."""
    ok: list[dict[str, Any]] = []
    bad: list[dict[str, Any]] = []
    for raw in versions:
        number = _number(raw)
        base = {"LaunchTemplateId": template.id, "LaunchTemplateName": template.name}
        version = None
        if number is not None:
            version = next((v for v in template.versions if v.number == number), None)
        if version is None:
            bad.append(
                {
                    **base,
                    "VersionNumber": number if number is not None else 0,
                    "ResponseError": {
                        "Code": "launchTemplateVersionDoesNotExist",
                        "Message": f"The specified launch template version {raw} does not exist.",
                    },
                }
            )
            continue
        if number == template.default_version_number:
            # Refused for this version only; the others in the call are still deleted.
            bad.append(
                {
                    **base,
                    "VersionNumber": number,
                    "ResponseError": {
                        "Code": "launchTemplateVersionIsDefaultVersion",
                        "Message": "Cannot delete the default version of a launch template. "
                        "Set a different version as the default first, or delete the launch template.",
                    },
                }
            )
            continue
        template.versions.remove(version)
        ok.append({**base, "VersionNumber": number})
    return ok, bad
