#!/usr/bin/env python3
"""Checks the Grafana dashboard: its structure (a unique uid, panels with unique ids that do not
overlap on the 24-column grid, every target on the datasource variable) and every PromQL
expression, which is written into a rules file, one recording rule each, for `promtool check
rules` to parse. Usage: check_dashboard.py DASHBOARD.json PROMTOOL"""

import json
import subprocess
import sys
import tempfile

# Grafana's own variables, as Prometheus sees them once Grafana has substituted them.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}


def fail(message):
    print(f"check_dashboard: {message}", file=sys.stderr)
    sys.exit(1)


def main(path, promtool):
    with open(path, encoding="utf-8") as f:
        dashboard = json.load(f)
    for key in ("uid", "title", "panels", "templating", "schemaVersion"):
        if key not in dashboard:
            fail(f"{path}: no {key!r}")
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    if "datasource" not in variables:
        fail("no datasource variable: the dashboard would be tied to one Prometheus")
    seen_ids, cells, expressions = set(), {}, []
    for panel in dashboard["panels"]:
        pid, title = panel["id"], panel["title"]
        if pid in seen_ids:
            fail(f"panel id {pid} twice")
        seen_ids.add(pid)
        grid = panel["gridPos"]
        if grid["x"] + grid["w"] > 24:
            fail(f"{title!r} is wider than the grid")
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                if (x, y) in cells:
                    fail(f"{title!r} overlaps {cells[(x, y)]!r}")
                cells[(x, y)] = title
        if not panel.get("targets"):
            fail(f"{title!r} shows nothing")
        for target in panel["targets"]:
            if target.get("datasource", {}).get("uid") != "${datasource}":
                fail(f"{title!r} {target['refId']}: not on the datasource variable")
            expr = target["expr"]
            for name, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(name, value)
            if "$" in expr:
                fail(f"{title!r} {target['refId']}: unknown variable in {expr}")
            expressions.append((title, target["refId"], expr))
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:panel{i}", "expr": expr}
                    for i, (_, _, expr) in enumerate(expressions)
                ],
            }
        ]
    }
    with tempfile.NamedTemporaryFile("w", suffix=".yml") as f:
        # JSON is YAML: promtool reads it as a rules file.
        json.dump(rules, f)
        f.flush()
        checked = subprocess.run([promtool, "check", "rules", f.name], capture_output=True, text=True)
    if checked.returncode != 0:
        fail(f"promtool refused an expression:\n{checked.stdout}{checked.stderr}")
    print(f"check_dashboard: {len(dashboard['panels'])} panels, {len(expressions)} expressions: clean")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        fail(__doc__)
    main(sys.argv[1], sys.argv[2])
