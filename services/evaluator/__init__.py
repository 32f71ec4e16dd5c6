"""The evaluator service (runs evaluators after a reply); arrives with the distributed runtime."""
