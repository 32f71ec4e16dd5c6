"""The memory service: owns the database and serves every storage operation over NATS."""
