"""Prefect tasks of the deploy and scheduled flows: one concern each, its rollback beside it.

Tasks reach the server only through `agentdeploy.client` (HTTP, as the flow's identity) and use
pure helpers of the `agentdeploy` package; never the server's internals or disk.
"""
