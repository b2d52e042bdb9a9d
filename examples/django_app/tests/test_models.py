from decimal import Decimal

import pytest
from django.db import IntegrityError, transaction
from django.db.models import ProtectedError
from shop.models import Category, Customer, Order, OrderLine, Product

pytestmark = pytest.mark.django_db


def test_a_product_is_saved_with_its_category(product: Product, books: Category) -> None:
    assert Product.objects.get(sku="BK-001").category == books


def test_a_product_reads_as_its_sku_and_name(product: Product) -> None:
    assert str(product) == "BK-001 Dune"


def test_skus_are_unique(product: Product, books: Category) -> None:
    with pytest.raises(IntegrityError), transaction.atomic():
        Product.objects.create(category=books, name="Other", sku="BK-001", price=Decimal("1"))


def test_a_negative_price_is_refused_by_the_database(books: Category) -> None:
    with pytest.raises(IntegrityError), transaction.atomic():
        Product.objects.create(category=books, name="Bad", sku="BK-BAD", price=Decimal("-1"))


def test_a_zero_quantity_line_is_refused(product: Product, customer: Customer) -> None:
    order = Order.objects.create(customer=customer)
    with pytest.raises(IntegrityError), transaction.atomic():
        OrderLine.objects.create(order=order, product=product, quantity=0, unit_price=product.price)


def test_a_category_with_products_cannot_be_deleted(product: Product, books: Category) -> None:
    with pytest.raises(ProtectedError):
        books.delete()


def test_customer_emails_are_unique(customer: Customer) -> None:
    with pytest.raises(IntegrityError), transaction.atomic():
        Customer.objects.create(email="ada@example.com", name="Other Ada")


def test_an_order_starts_open(customer: Customer) -> None:
    assert Order.objects.create(customer=customer).status == Order.Status.OPEN


def test_an_order_total_sums_its_lines(product: Product, customer: Customer) -> None:
    order = Order.objects.create(customer=customer)
    OrderLine.objects.create(order=order, product=product, quantity=2, unit_price=Decimal("9.50"))
    OrderLine.objects.create(order=order, product=product, quantity=1, unit_price=Decimal("1.25"))
    assert order.total() == Decimal("20.25")


def test_deleting_a_customer_deletes_their_orders(product: Product, customer: Customer) -> None:
    Order.objects.create(customer=customer)
    customer.delete()
    assert not Order.objects.exists()


def test_rows_from_the_previous_test_are_gone() -> None:
    assert not Customer.objects.exists()
    assert not Product.objects.exists()
