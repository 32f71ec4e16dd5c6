"""The embedding service (drains the embedding queue); arrives with the distributed runtime."""
