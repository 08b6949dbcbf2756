"""Serving: endpoint configs, the gateway, the supervisor and its backends, workers."""
