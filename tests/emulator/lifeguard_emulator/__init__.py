"""AWS API emulator for lifeguard's end-to-end tests.

moto (pinned) serves every AWS API; this package wraps moto's WSGI application with a
middleware that adds the Auto Scaling lifecycle-hook flow, instance refresh, pending AMIs,
launch-template version fixes, an IMDSv2 endpoint per simulated instance, a call recorder,
fault injection and a small JSON control API. See ../README.md.
"""

__version__ = "0.1.0"
