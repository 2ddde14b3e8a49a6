"""The queue-reader's engine: worker.py runs it. engine.py wires the parts and orders their stop."""
