"""Examples of processing steps for the worker (docs/worker.md)."""
