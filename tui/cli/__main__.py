"""``python -m agentdeck.tui.cli``: the same as the ``agentdeck`` console script."""

from agentdeck.tui.cli import main

main()
