"""Model plugins: OpenAI-compatible servers, and (later) local models."""
