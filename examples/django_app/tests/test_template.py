"""The worker's database holds what Django's test-database creation makes."""

import os

import pytest
from django.contrib.auth.models import Permission
from django.contrib.contenttypes.models import ContentType
from django.core.cache import cache
from django.db import connection
from django.db.migrations.recorder import MigrationRecorder
from shop.models import Category

pytestmark = pytest.mark.django_db


def test_the_data_migration_rows_are_there() -> None:
    assert Category.objects.count() == 3


def test_the_seeded_categories_have_their_slugs() -> None:
    assert sorted(Category.objects.values_list("slug", flat=True)) == ["books", "garden", "kitchen"]


def test_sequences_continue_after_the_seeded_rows() -> None:
    assert Category.objects.create(name="Toys", slug="toys").pk == 4


def test_every_shop_migration_is_recorded_as_applied() -> None:
    applied = MigrationRecorder(connection).applied_migrations()
    assert {("shop", "0001_initial"), ("shop", "0002_seed_categories")} <= set(applied)


def test_the_database_cache_table_exists() -> None:
    cache.set("greeting", "hello", 30)
    assert cache.get("greeting") == "hello"


def test_content_types_exist_for_the_shop_models() -> None:
    assert ContentType.objects.filter(app_label="shop").count() == 5


def test_permissions_exist_for_the_shop_models() -> None:
    assert Permission.objects.filter(content_type__app_label="shop", codename="add_order").exists()


def test_django_uses_the_workers_database_and_no_test_database() -> None:
    name = connection.settings_dict["NAME"]
    assert name == os.environ["DATABASE_URL"].rsplit("/", 1)[1].split("?")[0]
    assert not name.startswith("test_")


def test_each_worker_has_its_own_database() -> None:
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker:
        assert connection.settings_dict["NAME"].endswith("_" + worker)
