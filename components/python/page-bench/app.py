"""The benchmark's page in Python on the alorig SDK: one PostgreSQL query, one
Redis GET and an HTML template, the same bytes as the Rust `page-bench` guest's
`/h/{id}` and the Django baseline. `POST /setup` fills its own database and keys
with the same data (1,000 products, stock = id % 17)."""

from html import escape
from string import Template

from alorig import App, Http404, Response, db, redis

app = App()

QUERY = "SELECT name, price::text FROM products WHERE id = $1"
PAGE = Template(
    "<!doctype html>\n<html><head><title>$name</title></head>\n"
    "<body><h1>$name</h1><p class=\"price\">$price</p><p class=\"stock\">In stock: $stock</p></body></html>\n"
)


@app.post("setup")
def setup(request):
    db.execute("CREATE TABLE IF NOT EXISTS products (id int PRIMARY KEY, name text NOT NULL, price numeric(10,2) NOT NULL)")
    db.execute("INSERT INTO products SELECT i, 'Product ' || i, i * 1.25 FROM generate_series(1, 1000) i ON CONFLICT DO NOTHING")
    for i in range(1, 1001):
        redis.set(f"stock:{i}", str(i % 17))
    return Response("ready\n", content_type="text/plain")


@app.get("h/<int:pk>")
def page(request, pk):
    row = db.query_one(QUERY, pk)
    if row is None:
        raise Http404("no such product")
    stock = redis.get(f"stock:{pk}")
    return Response(PAGE.substitute(name=escape(row["name"]), price=escape(row["price"]), stock=int(stock or 0)))
