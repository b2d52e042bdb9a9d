"""Order placement: stock is checked and taken in one transaction, or not at all."""

from django.db import transaction

from shop.models import Customer, Order, OrderLine, Product


class OutOfStock(Exception):
    pass


def place_order(customer: Customer, items: list[tuple[Product, int]]) -> Order:
    with transaction.atomic():
        order = Order.objects.create(customer=customer)
        for product, quantity in items:
            locked = Product.objects.select_for_update().get(pk=product.pk)
            if locked.stock < quantity:
                raise OutOfStock(f"{locked.sku}: {locked.stock} left, {quantity} wanted")
            locked.stock -= quantity
            locked.save(update_fields=["stock"])
            OrderLine.objects.create(order=order, product=locked, quantity=quantity, unit_price=locked.price)
        return order


def cancel(order: Order) -> None:
    with transaction.atomic():
        for line in order.lines.select_related("product"):
            Product.objects.filter(pk=line.product_id).update(stock=line.product.stock + line.quantity)
        order.status = Order.Status.CANCELLED
        order.save(update_fields=["status"])
