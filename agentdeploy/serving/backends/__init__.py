"""Ways to run served entities; `base.ServingBackend` is the contract."""
