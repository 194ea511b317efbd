"""The gRPC transport: thin servicers over the service layer."""
