import os

import redis
from django.db import connection
from django.http import Http404
from django.shortcuts import render
from django.urls import path

# One client per worker process, as a Django app keeps it.
REDIS = redis.Redis.from_url(os.environ["PAGE_REDIS_URL"])


def page(request, pk):
    with connection.cursor() as cursor:
        cursor.execute("SELECT name, price::text FROM products WHERE id = %s", [pk])
        row = cursor.fetchone()
    if row is None:
        raise Http404("no such product")
    stock = REDIS.get(f"page:stock:{pk}")
    return render(request, "page.html", {"name": row[0], "price": row[1], "stock": int(stock or 0)})


urlpatterns = [path("h/<int:pk>", page)]
