"""A data migration: the shop's fixed categories (its rows must be in every test database)."""

from django.db import migrations

CATEGORIES = [("Books", "books"), ("Garden", "garden"), ("Kitchen", "kitchen")]


def seed(apps, schema_editor):  # type: ignore[no-untyped-def]
    category = apps.get_model("shop", "Category")
    category.objects.bulk_create(category(name=name, slug=slug) for name, slug in CATEGORIES)


def unseed(apps, schema_editor):  # type: ignore[no-untyped-def]
    apps.get_model("shop", "Category").objects.filter(slug__in=[slug for _, slug in CATEGORIES]).delete()


class Migration(migrations.Migration):
    dependencies = [("shop", "0001_initial")]
    operations = [migrations.RunPython(seed, unseed)]
