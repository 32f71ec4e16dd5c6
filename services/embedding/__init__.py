"""The embedding service: drains the embedding queue (JetStream), writes vectors through memory."""
