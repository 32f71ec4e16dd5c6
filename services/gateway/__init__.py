"""The gateway service: HTTP in front of the agents on NATS."""
