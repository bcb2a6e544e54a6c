"""``sdp-reconcile``: argument parsing (``main``), the commands, the state-editing commands,
the watch loop and text made safe for a terminal.

May import every other layer; nothing imports it except the console script.
"""
