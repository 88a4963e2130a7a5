"""Multi-sample pipelines and metrics: engine-independent (they take samples, not models)."""
