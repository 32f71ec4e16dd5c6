"""The agent core: characters, plugins, the runtime and the message pipeline (elizaOS in Python)."""
