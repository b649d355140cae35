"""The daemon: Kleene's HTTP API (and WebSocket exec) on a unix socket, over the service layer."""
