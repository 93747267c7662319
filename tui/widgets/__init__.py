"""Widgets of the control centre: the live table, the DAG map, the status bar, the command line."""
