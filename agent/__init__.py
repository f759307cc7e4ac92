"""Device side: models, measurements, telemetry, profiling, transport and the headless daemon."""
