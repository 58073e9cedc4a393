"""The HTTP claim service (``linkpool serve``): the ASGI app, API keys and metrics.

Importing this package is cheap: Starlette, uvicorn and prometheus_client load only with the
modules that need them (``app``, ``server``, ``metrics``).
"""
