"""Every setting of the service, read from `BATCHOPS_*` variables and a `.env` file."""

from __future__ import annotations

from pydantic import Field, PositiveFloat, PositiveInt, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from consumer.domain.grants import Grant
from consumer.grant_setting import parse_grants
from contracts import (
    DEFAULT_DELIVERY_LIMIT,
    DEFAULT_NAMESPACE,
    MAX_BODY_BYTES,
    MAX_OPERATIONS,
    Topology,
)
from publisher import DEFAULT_AMQP_URL

_DATABASE_URL_FORM = "write postgresql+asyncpg://USER:PASSWORD@HOST:PORT/DATABASE"


# 256 took a flood of 1,000 requests off the queue 2-3 times sooner than 16 (bench.fairness).
DEFAULT_FAIR_WINDOW = 256


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="BATCHOPS_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    # One node, or the nodes of a cluster separated by commas (each a whole URL).
    amqp_url: str = DEFAULT_AMQP_URL
    database_url: str = "postgresql+asyncpg://localhost/batchops"
    namespace: str = Field(DEFAULT_NAMESPACE, pattern=r"^[A-Za-z0-9_.-]+$")
    http_host: str = "0.0.0.0"  # noqa: S104 - a service in a container listens on every interface
    http_port: int = Field(8000, ge=0, le=65535)
    # HTTP API requests per token's user and API process: POSTs (submit, cancel, retry) and
    # GETs, as `N/second|minute|hour|day`; `0` turns a limit off.
    rate_limit_submit: str = "600/minute"
    rate_limit_read: str = "6000/minute"
    # `batchops consume` serves /healthz, /readyz and /metrics here when set (one port per
    # process: leave unset when several consumers share a host without their own network).
    metrics_port: int | None = Field(None, ge=0, le=65535)

    max_operations: int = Field(MAX_OPERATIONS, ge=1, le=MAX_OPERATIONS)
    max_body_bytes: int = Field(MAX_BODY_BYTES, ge=1024, le=MAX_BODY_BYTES)
    # Broker users allowed to publish batches; empty means any authenticated user.
    allowed_publishers: list[str] = Field(default_factory=list)
    # JSON: the actors each broker user may publish batches for (read by `grants`); unset:
    # anybody may act for anyone. Kept as text: pydantic-settings before 2.7 would decode the
    # JSON itself and report a mistake as a traceback instead of a line naming the setting.
    publisher_grants: str | None = None

    prefetch: PositiveInt = 8
    # Batches one actor may have running in this consumer while others' wait for a slot.
    # Unset: half the prefetch (at least 1); 0 turns fair share off, and so does
    # serialize_batches (queue order comes first there).
    fair_share: int | None = Field(None, ge=0)
    # Deliveries the broker hands this consumer with fair share on: those beyond the prefetch
    # are parked in the database's waiting room as they come, many to a transaction, so the
    # window sets how fast a flood is taken off the queue for others' requests behind it to
    # arrive (docs/operations.md). Unset: DEFAULT_FAIR_WINDOW, or twice the prefetch if more.
    # The broker's prefetch count is a 16-bit number.
    fair_window: int | None = Field(None, ge=1, le=65535)
    # How long a parked request's lease holds without renewal (renewed every third of it while
    # its batch runs): how soon a request whose consumer died runs elsewhere.
    fair_lease_seconds: float = Field(10.0, ge=1.0, le=3600.0)
    # Run batches one at a time across every consumer (a PostgreSQL advisory lock): for
    # producers that need batches touching the same resources applied in queue order.
    serialize_batches: bool = False
    delivery_limit: PositiveInt = DEFAULT_DELIVERY_LIMIT
    db_pool_size: PositiveInt = 10
    # Longest a statement (a lock wait, a COMMIT) may take before it counts as a fault.
    db_command_timeout_seconds: PositiveFloat = 30.0
    # Longest wait for a new connection; past it the database counts as unreachable.
    db_connect_timeout_seconds: PositiveFloat = 10.0

    relay_batch_size: PositiveInt = 200
    relay_poll_seconds: PositiveFloat = 0.5

    # A transaction the database answers but refuses (deadlock, serialization failure, a
    # connection cut while it still answers) is retried for this long, then reported
    # UNAVAILABLE. While the database does not answer at all, work waits without this limit.
    db_retry_seconds: PositiveFloat = 30.0
    retry_base_seconds: PositiveFloat = 0.05
    retry_max_seconds: PositiveFloat = 2.0

    # Re-subscribe when the broker cancelled us, or messages wait but none came for this long.
    watchdog_interval_seconds: PositiveFloat = 5.0
    stall_seconds: PositiveFloat = 30.0

    # How often the depth and consumers of the queues are read from the broker (gauges, console).
    broker_poll_seconds: PositiveFloat = 15.0

    # Webhooks (docs/contract.md, Webhooks): each try's longest wait for the receiver, how
    # long after the batch finished a failing delivery is still tried, how many tries at
    # once per process, and whether callbacks may reach loopback and private networks.
    webhook_timeout_seconds: float = Field(10.0, gt=0, le=300)
    webhook_retry_seconds: float = Field(86400.0, ge=0)
    webhook_concurrency: int = Field(8, ge=1, le=256)
    webhook_allow_private: bool = False

    shutdown_timeout_seconds: PositiveFloat = 30.0
    log_level: str = "INFO"
    log_format: str = Field("auto", pattern="^(auto|json|console)$")
    # `serve`/`consume`/`api` run on uvloop where it is installed (auto), or say which.
    event_loop: str = Field("auto", pattern="^(auto|uvloop|asyncio)$")

    @field_validator("database_url")
    @classmethod
    def _asyncpg_url(cls, value: str) -> str:
        """Refuse at once what would otherwise fail deep inside SQLAlchemy with an import
        error (`postgresql://` asks for psycopg, which batchops does not install)."""
        scheme, separator, rest = value.partition("://")
        if not separator or not rest:
            raise ValueError(f"{value!r} is not a URL: {_DATABASE_URL_FORM}")
        if scheme != "postgresql+asyncpg":
            raise ValueError(
                f"batchops reaches PostgreSQL through asyncpg, so the URL must start with "
                f"postgresql+asyncpg://, not {scheme}:// ({_DATABASE_URL_FORM})"
            )
        return value

    @field_validator("publisher_grants")
    @classmethod
    def _grants(cls, value: str | None) -> str | None:
        parse_grants(value)  # raises ValueError, which pydantic reports as a bad setting
        return value or None

    @field_validator("rate_limit_submit", "rate_limit_read")
    @classmethod
    def _rate_limit(cls, value: str) -> str:
        # Imported here: it loads the `limits` library, which most commands do not need.
        from consumer.rate_limit_setting import rate_limit  # noqa: PLC0415

        rate_limit(value)  # raises ValueError, which pydantic reports as a bad setting
        return value

    @field_validator("amqp_url")
    @classmethod
    def _every_node_is_an_amqp_url(cls, value: str) -> str:
        # Imported here: the broker client would slow every command's start, `--help` included.
        from publisher import broker_nodes  # noqa: PLC0415

        broker_nodes(value)  # raises ValueError, which pydantic reports as a bad setting
        return value

    @model_validator(mode="after")
    def _window_holds_the_prefetch(self) -> Settings:
        window = self.fair_window
        if self.fair_share_limit is not None and window is not None and window < self.prefetch:
            raise ValueError(
                f"BATCHOPS_FAIR_WINDOW ({self.fair_window}) must be at least BATCHOPS_PREFETCH "
                f"({self.prefetch}): the window holds the batches that run and those waiting"
            )
        return self

    @property
    def delivery_window(self) -> int:
        """Deliveries the broker may hand this consumer at once."""
        if self.fair_share_limit is None:
            return self.prefetch
        if self.fair_window is None:
            return min(max(DEFAULT_FAIR_WINDOW, 2 * self.prefetch), 65535)
        return self.fair_window

    @property
    def fair_share_limit(self) -> int | None:
        """Batches one actor may have running while others' wait; None: fair share is off."""
        if self.serialize_batches:
            return None
        if self.fair_share is None:
            return max(1, self.prefetch // 2)
        return self.fair_share or None

    @property
    def grants(self) -> dict[str, Grant] | None:
        return parse_grants(self.publisher_grants)

    @property
    def topology(self) -> Topology:
        return Topology(self.namespace, self.delivery_limit)
