"""REST routers of the workspace, one module per resource."""
