"""The HTTP API: `create_app` builds it, `serve` runs it with its dispatcher."""

from journeyman.api.app import create_app

__all__ = ["create_app"]
