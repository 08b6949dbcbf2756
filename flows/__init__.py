"""Prefect flows: the deploy DAG and the scheduled flows. `serve.py` serves them for the stack."""
