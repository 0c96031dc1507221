"""{{name}}: a Python app on alorig-host (the alorig SDK in ./sdk)."""

from alorig import App, JsonResponse, Response

app = App()


@app.get("/")
def index(request):
    return Response("<h1>Hello from {{name}}</h1>\n")


@app.get("api/hello/<str:who>")
def hello(request, who):
    return JsonResponse({"hello": who, "lang": request.GET.get("lang", "en")})
