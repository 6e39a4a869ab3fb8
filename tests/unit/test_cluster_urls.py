"""BATCHOPS_AMQP_URL names one broker node or the nodes of a cluster, comma-separated;
BATCHOPS_DATABASE_URL one PostgreSQL host or several."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from consumer.config import Settings
from consumer.entrypoints.failures import broker_address, database_address
from publisher import broker_nodes

CLUSTER = (
    "amqp://app:s3cret@rabbit-0:5672/prod, amqp://app:s3cret@rabbit-1:5673/prod,"
    "amqps://app:s3cret@rabbit-2/prod"
)


class TestBrokerNodes:
    def test_one_url_is_one_node(self) -> None:
        [node] = broker_nodes("amqp://guest:guest@localhost:5672/")
        assert (node.host, node.port, node.user) == ("localhost", 5672, "guest")

    def test_comma_separated_urls_are_the_nodes_in_order(self) -> None:
        nodes = broker_nodes(CLUSTER)
        assert [(n.scheme, n.host, n.explicit_port, n.path) for n in nodes] == [
            ("amqp", "rabbit-0", 5672, "/prod"),
            ("amqp", "rabbit-1", 5673, "/prod"),
            ("amqps", "rabbit-2", None, "/prod"),
        ]

    @pytest.mark.parametrize(
        "url",
        [
            "amqp://guest:guest@h1:5672/,h2:5672",  # a host alone is not a URL
            "amqp://guest:guest@h1:5672/,",  # an empty entry
            "http://h1/",
            "",
        ],
    )
    def test_anything_but_whole_amqp_urls_is_refused(self, url: str) -> None:
        with pytest.raises(ValueError, match="is not an amqp:// or amqps:// URL"):
            broker_nodes(url)

    def test_a_comma_in_a_password_is_written_percent_encoded(self) -> None:
        [node] = broker_nodes("amqp://app:a%2Cb@h1/")
        assert node.password == "a,b"  # noqa: S105 - a made-up password in a parsing test


class TestSettings:
    def test_the_setting_accepts_a_cluster(self) -> None:
        assert Settings(amqp_url=CLUSTER).amqp_url == CLUSTER

    def test_a_malformed_list_is_a_configuration_error(self) -> None:
        with pytest.raises(ValidationError, match="amqp_url"):
            Settings(amqp_url="amqp://guest:guest@h1:5672/,h2:5672/")

    def test_failures_name_every_node_without_passwords(self) -> None:
        assert broker_address(CLUSTER) == "rabbit-0:5672, rabbit-1:5673, rabbit-2:5671"


class TestDatabaseHosts:
    def test_failures_name_every_database_host(self) -> None:
        url = (
            "postgresql+asyncpg://batchops:pw@/batchops?host=pg-0:5432&host=pg-1:5433"
            "&target_session_attrs=read-write"
        )
        assert database_address(url) == "pg-0:5432, pg-1:5433"

    def test_a_single_host_url_names_its_host(self) -> None:
        assert database_address("postgresql+asyncpg://u@db.internal/x") == "db.internal:5432"
