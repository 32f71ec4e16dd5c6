"""Small services that show how to extend a running stack over NATS."""
