"""No django_db_setup here: under `testdb run`, testdb's plugin points Django at this
worker's database, a clone of a template built like Django's test database."""

from decimal import Decimal

import pytest
from shop.models import Category, Customer, Product


@pytest.fixture
def books() -> Category:
    return Category.objects.get(slug="books")


@pytest.fixture
def product(books: Category) -> Product:
    return Product.objects.create(category=books, name="Dune", sku="BK-001", price=Decimal("9.50"), stock=5)


@pytest.fixture
def customer() -> Customer:
    return Customer.objects.create(email="ada@example.com", name="Ada")
