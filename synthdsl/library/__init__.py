"""What a spec can name: sources and their parts, layers, operations, adapters, checkpoints."""
