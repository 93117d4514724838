"""``python -m agentgroup``: the same as the ``agentgroup`` command."""

from agentgroup.cli import main

raise SystemExit(main())
