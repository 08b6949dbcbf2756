"""Fixtures for the workspace tests."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session", autouse=True)
def isolated_databricks_config(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The databricks-sdk reads ~/.databrickscfg and DATABRICKS_* variables: give it none of them."""
    saved = {k: v for k, v in os.environ.items() if k.startswith("DATABRICKS_")}
    for key in saved:
        del os.environ[key]
    os.environ["DATABRICKS_CONFIG_FILE"] = str(tmp_path_factory.mktemp("databricks") / "absent.cfg")
    yield
    os.environ.pop("DATABRICKS_CONFIG_FILE", None)
    os.environ.update(saved)
