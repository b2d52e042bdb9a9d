from django.urls import path
from shop import views

urlpatterns = [
    path("categories/", views.categories),
    path("products/<int:product_id>/", views.product),
    path("orders/", views.create_order),
]
