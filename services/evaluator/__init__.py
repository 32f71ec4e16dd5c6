"""The evaluator service: runs the agents' evaluators after each turn (REFLECTION, ...)."""
