"""The library behind every service and every embedded user: bus, errors, config, telemetry."""
