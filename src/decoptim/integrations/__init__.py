"""Engine integrations (transformers, vLLM). They depend on decoptim.core, never the reverse."""
