"""Screens of the control centre, one per resource, plus the confirm and help dialogs."""
