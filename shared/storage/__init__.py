"""Storage: the ``DatabaseAdapter`` port and its SQL implementation."""
