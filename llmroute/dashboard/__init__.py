"""The web dashboard: spend, savings, quality kept, provider health, budgets and requests.

Read-only. ``data`` computes each view with the code behind ``llmroute report`` and ``llmroute quality``;
``api`` serves it as JSON to admin keys; ``app`` mounts it on the gateway or serves it from a ledger alone.
"""
