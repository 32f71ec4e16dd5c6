"""The fault suite and the fuzz run: the stack as real processes, under faults and bad input."""
