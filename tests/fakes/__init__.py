"""Honest local stand-ins for outside services: a fake Claude Code CLI and a Messages API
server. Nothing in the tests reaches the internet."""
