import json

from django.core.cache import cache
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404
from django.views.decorators.csrf import csrf_exempt

from shop.models import Category, Customer, Product
from shop.services import OutOfStock, place_order


def categories(request: HttpRequest) -> JsonResponse:
    names = cache.get("category-names")
    if names is None:
        names = list(Category.objects.order_by("name").values_list("name", flat=True))
        cache.set("category-names", names, 60)
    return JsonResponse({"categories": names})


def product(request: HttpRequest, product_id: int) -> JsonResponse:
    item = get_object_or_404(Product, pk=product_id)
    return JsonResponse({"sku": item.sku, "stock": item.stock, "price": str(item.price)})


@csrf_exempt
def create_order(request: HttpRequest) -> HttpResponse:
    body = json.loads(request.body)
    customer = get_object_or_404(Customer, email=body["email"])
    items = [(get_object_or_404(Product, sku=sku), qty) for sku, qty in body["items"].items()]
    try:
        order = place_order(customer, items)
    except OutOfStock as exc:
        return JsonResponse({"error": str(exc)}, status=409)
    return JsonResponse({"order": order.pk, "total": str(order.total())}, status=201)
