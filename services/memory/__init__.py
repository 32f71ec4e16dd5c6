"""The memory service (owns the database); its handlers arrive with the storage issue."""
