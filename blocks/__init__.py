"""Prefect blocks: how flows reach the workspace, and each agent principal's OAuth secret."""
