"""``get_openai_plugin()``: models from OpenAI or any OpenAI-compatible server."""

from shared.plugins.openai import get_openai_plugin

__all__ = ["get_openai_plugin"]
