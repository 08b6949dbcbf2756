"""The one settings object: every part of agentdeploy reads its configuration from here.

Values come from `AGENTDEPLOY_*` environment variables; paths derive from `AGENTDEPLOY_HOME`.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings", "get_settings"]

MiB = 1024 * 1024


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AGENTDEPLOY_", extra="ignore")

    home: Path = Field(default=Path("~/.agentdeploy"), description="Where all state lives.")
    bind: str = Field(default="127.0.0.1", description="Address the agentdeploy server listens on.")
    port: int = 8765
    prefect_port: int = 4200
    mlflow_port: int = 5000
    runner_port: int | None = Field(default=None, description="Health port of the flow runner (Prefect port + 1).")
    database_url: str | None = Field(default=None, description="SQLAlchemy URL; SQLite under home if unset.")
    # Client side: where the CLI/SDK connect and as whom (else read from the credentials file).
    host: str | None = None
    token: SecretStr | None = None
    # Tokens.
    access_token_lifetime_s: int = Field(default=3600, ge=5)
    # Scheduled flows.
    rotation_interval_s: float = Field(default=900.0, ge=5, description="How often agent tokens are renewed.")
    secret_rotation_period_s: float = Field(default=86400.0, ge=60, description="Age at which OAuth secrets rotate.")
    format_interval_s: float = Field(default=30.0, ge=1, description="How often inference logs are formatted.")
    # Serving and logging.
    max_payload_bytes: int = 16 * MiB
    endpoint_timeout_s: float = 120.0
    spool_sync: Literal["background", "always"] = "background"
    spool_sync_interval_ms: int = 20
    scale_to_zero_idle_s: float = 1800.0
    # One interpreter kept ready with mlflow imported, for the next worker start (cold starts).
    worker_spare: bool = True
    # TLS for reviewers on other machines.
    tls_certfile: Path | None = None
    tls_keyfile: Path | None = None

    # Derived paths ---------------------------------------------------------------------------
    @property
    def home_dir(self) -> Path:
        return self.home.expanduser().resolve()

    @property
    def keys_dir(self) -> Path:
        return self.home_dir / "keys"

    @property
    def credentials_path(self) -> Path:
        return self.home_dir / "credentials"

    @property
    def prefect_home(self) -> Path:
        return self.home_dir / "prefect"

    @property
    def mlflow_dir(self) -> Path:
        return self.home_dir / "mlflow"

    @property
    def warehouse_dir(self) -> Path:
        return self.home_dir / "warehouse"

    @property
    def logs_dir(self) -> Path:
        return self.home_dir / "logs"

    @property
    def spool_dir(self) -> Path:
        return self.home_dir / "spool"

    @property
    def run_dir(self) -> Path:
        return self.home_dir / "run"

    @property
    def workers_dir(self) -> Path:
        return self.home_dir / "workers"

    @property
    def sqlalchemy_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home_dir / 'workspace.db'}"

    @property
    def scheme(self) -> str:
        return "https" if self.tls_certfile else "http"

    @property
    def server_url(self) -> str:
        """The URL the local stack's own clients use to reach the agentdeploy server."""
        host = "127.0.0.1" if self.bind in ("0.0.0.0", "::", "127.0.0.1") else self.bind
        return f"{self.scheme}://{host}:{self.port}"

    @property
    def prefect_api_url(self) -> str:
        return f"http://127.0.0.1:{self.prefect_port}/api"

    @property
    def flow_runner_port(self) -> int:
        return self.runner_port or self.prefect_port + 1

    @property
    def mlflow_tracking_uri(self) -> str:
        return f"http://127.0.0.1:{self.mlflow_port}"

    @property
    def prefect_auth_string_path(self) -> Path:
        return self.keys_dir / "prefect-api-auth"

    @property
    def prefect_encryption_key_path(self) -> Path:
        return self.keys_dir / "prefect-encryption-key"


@functools.cache
def get_settings() -> Settings:
    return Settings()
