import json

import pytest
from django.test import Client
from shop.models import Customer, Product

pytestmark = pytest.mark.django_db


def test_the_category_list_shows_the_seeded_categories(client: Client) -> None:
    assert client.get("/categories/").json() == {"categories": ["Books", "Garden", "Kitchen"]}


def test_a_product_page_shows_its_stock(client: Client, product: Product) -> None:
    assert client.get(f"/products/{product.pk}/").json() == {"sku": "BK-001", "stock": 5, "price": "9.50"}


def test_an_unknown_product_is_404(client: Client) -> None:
    assert client.get("/products/999999/").status_code == 404


def test_an_order_can_be_placed_over_http(client: Client, product: Product, customer: Customer) -> None:
    body = json.dumps({"email": customer.email, "items": {"BK-001": 2}})
    response = client.post("/orders/", body, content_type="application/json")
    assert (response.status_code, response.json()["total"]) == (201, "19.00")


def test_an_order_beyond_the_stock_is_409(client: Client, product: Product, customer: Customer) -> None:
    body = json.dumps({"email": customer.email, "items": {"BK-001": 50}})
    assert client.post("/orders/", body, content_type="application/json").status_code == 409
