"""The staff send console (``/console/``): compose, preview and send campaigns, follow them, browse history.

Pages are server-rendered Django templates; a little plain JavaScript adds live checks (through the same
validator as the API), recipient search and counts, and a self-updating progress bar.
"""
