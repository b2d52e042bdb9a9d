import pytest
from shop.models import Customer, Order, OrderLine, Product
from shop.services import OutOfStock, cancel, place_order

pytestmark = pytest.mark.django_db


def test_placing_an_order_takes_the_stock(product: Product, customer: Customer) -> None:
    place_order(customer, [(product, 2)])
    product.refresh_from_db()
    assert product.stock == 3


def test_an_order_line_keeps_the_price_at_the_time(product: Product, customer: Customer) -> None:
    order = place_order(customer, [(product, 1)])
    product.price = 99
    product.save()
    assert order.lines.get().unit_price == 9.5


def test_an_order_beyond_the_stock_is_refused(product: Product, customer: Customer) -> None:
    with pytest.raises(OutOfStock, match="BK-001: 5 left, 6 wanted"):
        place_order(customer, [(product, 6)])


def test_a_refused_order_leaves_nothing_behind(product: Product, customer: Customer) -> None:
    with pytest.raises(OutOfStock):
        place_order(customer, [(product, 1), (product, 10)])
    product.refresh_from_db()
    assert (product.stock, Order.objects.count(), OrderLine.objects.count()) == (5, 0, 0)


def test_cancelling_returns_the_stock(product: Product, customer: Customer) -> None:
    order = place_order(customer, [(product, 4)])
    cancel(order)
    product.refresh_from_db()
    assert (product.stock, order.status) == (5, Order.Status.CANCELLED)
