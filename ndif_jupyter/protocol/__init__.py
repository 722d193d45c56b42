"""The wire format: graphs and results as a JSON document plus tensors in a safetensors container (docs/protocol.md)."""
