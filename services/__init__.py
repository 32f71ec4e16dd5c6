"""The deployable services. Each one is thin and talks to the others only over NATS."""
