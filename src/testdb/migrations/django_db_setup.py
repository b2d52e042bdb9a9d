"""The ``django_db_setup`` fixture testdb registers over pytest-django's (see django_pytest)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from testdb.migrations.django_pytest import point_default_database

URL_VAR = "DATABASE_URL"  # the testdb plugin points it at this worker's database first


@pytest.fixture(scope="session")
def django_db_setup(django_db_blocker: Any) -> Iterator[None]:
    """This worker's testdb database, already migrated: nothing to create or tear down."""
    from django.db import connections

    with django_db_blocker.unblock():
        point_default_database(os.environ[URL_VAR])
        connection = connections["default"]
        # What create_test_db(serialize=True) keeps for serialized_rollback=True tests.
        connection._test_serialized_contents = connection.creation.serialize_db_to_string()
    yield
