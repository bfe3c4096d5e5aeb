"""The coordinator's gRPC edge: thin servicers that authenticate, convert and delegate to
the engine."""
