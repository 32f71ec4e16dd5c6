"""Model plugins: ``openai`` (any OpenAI-compatible server) and ``local`` (offline)."""
