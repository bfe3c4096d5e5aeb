"""The coordinator: scheduler and blind relay of model blobs."""
