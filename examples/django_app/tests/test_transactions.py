"""Transactional tests: real commits on the worker's database, flushed afterwards (as in Django)."""

import threading
from decimal import Decimal

import pytest
from django.db import DatabaseError, connection, connections, transaction
from shop.models import Category, Customer, Product
from shop.services import OutOfStock, place_order

pytestmark = pytest.mark.django_db(transaction=True)


def _stock_seen_from_another_connection(pk: int) -> int:
    seen: list[int] = []

    def look() -> None:
        seen.append(Product.objects.get(pk=pk).stock)
        connections.close_all()

    thread = threading.Thread(target=look)
    thread.start()
    thread.join()
    return seen[0]


def _product() -> Product:
    category = Category.objects.get_or_create(slug="tx", defaults={"name": "Tx"})[0]
    return Product.objects.create(category=category, name="Lamp", sku="TX-1", price=Decimal("20"), stock=3)


def test_a_committed_order_is_visible_to_other_connections() -> None:
    product = _product()
    place_order(Customer.objects.create(email="bo@example.com", name="Bo"), [(product, 1)])
    assert _stock_seen_from_another_connection(product.pk) == 2


def test_on_commit_callbacks_run_after_the_commit() -> None:
    ran: list[str] = []
    with transaction.atomic():
        transaction.on_commit(lambda: ran.append("sent"))
        assert ran == []
    assert ran == ["sent"]


def test_a_rolled_back_order_is_never_visible() -> None:
    product = _product()
    with pytest.raises(OutOfStock):
        place_order(Customer.objects.create(email="cy@example.com", name="Cy"), [(product, 9)])
    assert _stock_seen_from_another_connection(product.pk) == 3


def test_the_connection_is_in_autocommit_outside_atomic_blocks() -> None:
    assert connection.get_autocommit()
    assert not connection.in_atomic_block


def test_rows_committed_by_an_earlier_transactional_test_are_flushed() -> None:
    assert not Product.objects.filter(sku="TX-1").exists()
    assert not Customer.objects.exists()


def test_a_row_locked_by_another_transaction_cannot_be_taken_with_nowait() -> None:
    product = _product()
    locked, release = threading.Event(), threading.Event()

    def hold_lock() -> None:
        with transaction.atomic():
            Product.objects.select_for_update().get(pk=product.pk)
            locked.set()
            release.wait(10)
        connections.close_all()

    holder = threading.Thread(target=hold_lock)
    holder.start()
    try:
        assert locked.wait(10)
        with pytest.raises(DatabaseError), transaction.atomic():
            Product.objects.select_for_update(nowait=True).get(pk=product.pk)
    finally:
        release.set()
        holder.join()
