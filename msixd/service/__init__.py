"""Use cases and state of msixd. Knows nothing of gRPC: the transport calls in here."""
