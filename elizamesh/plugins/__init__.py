"""Model plugins: ``elizamesh.plugins.openai`` (any OpenAI-compatible server)."""
