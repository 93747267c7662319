"""The face of agentdeck: the command line (the composition root) and the Textual app.

This package's ``__init__`` imports nothing: ``agentdeck --daemon`` must never load Textual.
"""
