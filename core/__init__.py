"""agentdeck's orchestration core: models, rules, scheduler and ports.

Nothing here imports an engine, a screen, ``backends``, ``agents`` or ``tui``.
"""
