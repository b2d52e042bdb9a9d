"""pytest-django under a testdb run: ``django_db_setup`` uses this worker's database.

Loaded as its own pytest plugin (entry point ``testdb_django``); it does nothing unless
pytest-django is active and the process is part of a testdb run. The worker's database is
a clone of the template, which already holds what Django's test-database creation makes
(``testdb.migrations.django``), so there is no ``test_…`` database and no migrate per
worker. A project's own ``django_db_setup`` in a conftest still wins.
"""

from __future__ import annotations

import os

import pytest

RUN_ID_VAR = "TESTDB_RUN_ID"


@pytest.hookimpl(trylast=True)
def pytest_configure(config: pytest.Config) -> None:
    # Registered now, after pytest-django's plugin: the later plugin's fixture wins.
    if os.environ.get(RUN_ID_VAR) and config.pluginmanager.hasplugin("django"):
        from testdb.migrations import django_db_setup

        config.pluginmanager.register(django_db_setup, "testdb-django-db-setup")


def point_default_database(url: str) -> None:
    """``DATABASES['default']`` (and its open connection, if any) at ``url``."""
    from django.conf import settings
    from django.db import connections

    from testdb.migrations.django import database_settings

    fields = database_settings(url)
    settings.DATABASES["default"].update(fields)
    connections["default"].close()
    connections["default"].settings_dict.update(fields)
