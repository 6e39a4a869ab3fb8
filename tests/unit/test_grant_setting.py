"""BATCHOPS_PUBLISHER_GRANTS: read from the environment into grants, and a bad value refused at
start-up with a line naming the setting and what is wrong."""

from __future__ import annotations

import pytest

from consumer.config import Settings
from consumer.domain.grants import EVERYONE, Grant
from consumer.domain.model import Role
from consumer.entrypoints.cli import EXIT_BAD_INPUT, main
from consumer.grant_setting import EXAMPLE

VARIABLE = "BATCHOPS_PUBLISHER_GRANTS"


class TestReading:
    def test_the_documented_example_grants_ids_roles_and_everyone(self, monkeypatch):
        monkeypatch.setenv(VARIABLE, EXAMPLE)

        assert Settings().grants == {
            "partner-svc": Grant(actors=frozenset({3, 4})),
            "backoffice": Grant(roles=frozenset({Role.ADMIN, Role.STAFF})),
            "ops": EVERYONE,
        }

    @pytest.mark.parametrize("value", [None, ""])
    def test_unset_or_empty_means_no_grants(self, monkeypatch, value):
        if value is None:
            monkeypatch.delenv(VARIABLE, raising=False)
        else:
            monkeypatch.setenv(VARIABLE, value)

        assert Settings().grants is None

    def test_an_empty_mapping_grants_nobody_anything(self, monkeypatch):
        monkeypatch.setenv(VARIABLE, "{}")

        assert Settings().grants == {}


class TestRefusing:
    @pytest.mark.parametrize(
        ("value", "says"),
        [
            ("{partner: *}", "not JSON"),
            ('["partner-svc"]', "must be a JSON object mapping a broker user"),
            ('{"a": {"roles": ["boss"]}}', "roles.0: Input should be 'admin', 'staff'"),
            ('{"a": {"actors": [0]}}', "actors.0: Input should be greater than 0"),
            ('{"a": {"actors": ["3"]}}', "actors.0: Input should be a valid integer"),
            ('{"a": {"actor": [3]}}', "actor: Extra inputs are not permitted"),
            ('{"a": {}}', "'a' is granted no actor and no role"),
            ('{"a": "all"}', "a grant is \"*\" or an object, not 'all'"),
            ('{"": "*"}', "a broker user's name is empty"),
        ],
    )
    def test_a_bad_value_stops_the_start_with_a_line_naming_the_setting(
        self, monkeypatch, capsys, value, says
    ):
        monkeypatch.setenv(VARIABLE, value)

        assert main(["consume"]) == EXIT_BAD_INPUT

        error = capsys.readouterr().err
        assert error.startswith(f"batchops: invalid configuration: {VARIABLE}: "), error
        assert says in error
