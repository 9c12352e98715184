#!/usr/bin/env python3
"""Checks that lifeguard.yaml carries the tested IAM policies and SSM document.

packaging/iam/agent-policy.json and controller-policy.json are what tests/tests/iam_policy.rs
checks against the code's AWS calls; packaging/ssm/lifeguard-ArchiveLogs.json is the agentless
archive's command document. This script loads the CloudFormation template, resolves the
intrinsic functions of the AgentPolicy and ControllerPolicy documents with the example values
those JSON files use (account 111122223333, region eu-west-1, bucket example-fleet-logs, queue
lifeguard-controller, ...), and fails, naming the Sid, where a statement differs from the
file's. It also checks that the document's Content and Name are the file's.

Usage: check_policies.py [TEMPLATE]   (default: lifeguard.yaml beside this script)
Needs PyYAML. Exit 0 when everything matches, 1 on a difference, 2 on an unusable template.
"""

import json
import re
import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
PACKAGING = HERE.parent

# The example values of packaging/iam/*.json, by what stands for them in the template.
EXAMPLE = {
    "AWS::Partition": "aws",
    "AWS::Region": "eu-west-1",
    "AWS::AccountId": "111122223333",
    "AWS::URLSuffix": "amazonaws.com",
    "ArchiveBucket": "example-fleet-logs",
    "ArchiveBucketName": "example-fleet-logs",
    "ArchiveLogsDocument": "lifeguard-ArchiveLogs",
    "ArchiveKeyArn": "arn:aws:kms:eu-west-1:111122223333:key/EXAMPLE-KEY-ID",
    "ArchiveKey.Arn": "arn:aws:kms:eu-west-1:111122223333:key/EXAMPLE-KEY-ID",
    "Queue.Arn": "arn:aws:sqs:eu-west-1:111122223333:lifeguard-controller",
    "QueueName": "lifeguard-controller",
    "InstanceRoleName": "example-fleet-instance-role",
    "InstanceRole": "example-fleet-instance-role",
    "InstanceRole.Arn": "arn:aws:iam::111122223333:role/example-fleet-instance-role",
}

POLICIES = {
    "AgentPolicy": PACKAGING / "iam" / "agent-policy.json",
    "ControllerPolicy": PACKAGING / "iam" / "controller-policy.json",
}
DOCUMENT = ("ArchiveLogsDocument", PACKAGING / "ssm" / "lifeguard-ArchiveLogs.json")


class Intrinsic:
    """A short-form CloudFormation tag (!Sub, !GetAtt, ...) as its long form."""

    def __init__(self, name, value):
        self.name, self.value = name, value


class TemplateLoader(yaml.SafeLoader):
    pass


def _construct(loader, suffix, node):
    name = "Ref" if suffix == "Ref" else "Fn::" + suffix
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
        if name == "Fn::GetAtt":
            value = value.split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return {name: value}


TemplateLoader.add_multi_constructor("!", _construct)


class Unresolved(Exception):
    pass


def _lookup(name):
    if name not in EXAMPLE:
        raise Unresolved(f"no example value for `{name}`")
    return EXAMPLE[name]


def _sub(text, variables):
    def one(match):
        inner = match.group(1)
        if inner.startswith("!"):
            return "${" + inner[1:] + "}"
        if inner in variables:
            return variables[inner]
        return _lookup(inner)

    return re.sub(r"\$\{([^}]*)\}", one, text)


def resolve(value, where=""):
    """Resolves intrinsic functions with the example values; fails on what it cannot."""
    if isinstance(value, list):
        return [resolve(v, where) for v in value]
    if not isinstance(value, dict):
        return value
    if len(value) == 1:
        (key, arg), = value.items()
        if key == "Ref":
            return _lookup(arg)
        if key == "Fn::GetAtt":
            return _lookup(".".join(arg) if isinstance(arg, list) else arg)
        if key == "Fn::Sub":
            if isinstance(arg, list):
                text, variables = arg
                variables = {k: resolve(v, where) for k, v in variables.items()}
            else:
                text, variables = arg, {}
            return _sub(text, variables)
        if key == "Fn::If":
            # Both branches must come to the same example value: the policy is the tested one
            # whichever way the condition goes.
            _, yes, no = arg
            yes, no = resolve(yes, where), resolve(no, where)
            if yes != no:
                raise Unresolved(f"the branches of Fn::If differ: {yes!r} / {no!r}")
            return yes
        if key.startswith("Fn::"):
            raise Unresolved(f"cannot resolve `{key}`")
    return {k: resolve(v, where) for k, v in value.items()}


def compare_policy(logical_id, resource, path):
    problems = []
    expected = json.loads(path.read_text())
    document = resource.get("Properties", {}).get("PolicyDocument")
    if document is None:
        return [f"{logical_id}: no PolicyDocument"]
    version = document.get("Version")
    if version != expected.get("Version"):
        problems.append(f"{logical_id}: Version {version!r}, {path.name} has {expected.get('Version')!r}")
    want = {s.get("Sid"): s for s in expected["Statement"]}
    have = {}
    order = []
    for index, raw in enumerate(document.get("Statement", [])):
        sid = raw.get("Sid") if isinstance(raw, dict) else None
        label = f"Sid {sid}" if sid else f"statement #{index + 1} (no Sid)"
        try:
            statement = resolve(raw, label)
        except Unresolved as err:
            problems.append(f"{logical_id}: {label}: {err}")
            statement = None
        if sid in have:
            problems.append(f"{logical_id}: {label} appears twice")
        have[sid] = statement
        order.append(sid)
    for sid, statement in want.items():
        if sid not in have:
            problems.append(f"{logical_id}: Sid {sid} of {path.name} is missing from the template")
        elif have[sid] is not None and have[sid] != statement:
            lines = [f"{logical_id}: Sid {sid} differs from {path.name}:"]
            for key in sorted(set(statement) | set(have[sid])):
                if statement.get(key) != have[sid].get(key):
                    lines.append(f"  {key} in the template (resolved): {json.dumps(have[sid].get(key), sort_keys=True)}")
                    lines.append(f"  {key} in {path.name}: {json.dumps(statement.get(key), sort_keys=True)}")
            problems.append("\n".join(lines))
    for sid in have:
        if sid not in want:
            problems.append(f"{logical_id}: Sid {sid} is in the template but not in {path.name}")
    if order != [s.get("Sid") for s in expected["Statement"]]:
        if not problems:
            problems.append(f"{logical_id}: the statements are in another order than in {path.name}")
    return problems


def compare_document(resources):
    logical_id, path = DOCUMENT
    resource = resources.get(logical_id)
    if resource is None:
        return [f"{logical_id}: missing from the template"]
    properties = resource.get("Properties", {})
    problems = []
    if properties.get("Name") != "lifeguard-ArchiveLogs":
        problems.append(f"{logical_id}: Name {properties.get('Name')!r}, expected 'lifeguard-ArchiveLogs'")
    if properties.get("Content") != json.loads(path.read_text()):
        problems.append(f"{logical_id}: Content differs from {path.relative_to(PACKAGING.parent)}")
    return problems


def main(argv):
    template_path = Path(argv[1]) if len(argv) > 1 else HERE / "lifeguard.yaml"
    try:
        template = yaml.load(template_path.read_text(), Loader=TemplateLoader)
        resources = template["Resources"]
    except (OSError, yaml.YAMLError, KeyError, TypeError) as err:
        print(f"check_policies: cannot read {template_path}: {err}", file=sys.stderr)
        return 2
    problems = []
    for logical_id, path in POLICIES.items():
        resource = resources.get(logical_id)
        if resource is None:
            problems.append(f"{logical_id}: missing from the template")
            continue
        problems += compare_policy(logical_id, resource, path)
    problems += compare_document(resources)
    if problems:
        for problem in problems:
            print(f"check_policies: {problem}", file=sys.stderr)
        print(f"check_policies: {len(problems)} difference(s) between {template_path.name} and packaging/", file=sys.stderr)
        return 1
    counts = ", ".join(
        f"{lid} {len(json.loads(p.read_text())['Statement'])} statements" for lid, p in POLICIES.items()
    )
    print(f"check_policies: {template_path.name} matches packaging/iam ({counts}) and packaging/ssm")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
