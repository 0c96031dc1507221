# The Django baseline of the benchmark's page: a production-style settings file
# (DEBUG off, persistent database connections), PostgreSQL through psycopg 3.
import os

SECRET_KEY = "bench-only"
DEBUG = False
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "pagesite.urls"
INSTALLED_APPS = []
MIDDLEWARE = ["django.middleware.common.CommonMiddleware"]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": os.environ["PAGE_DB_NAME"],
        "USER": os.environ["PAGE_DB_USER"],
        "PASSWORD": os.environ["PAGE_DB_PASSWORD"],
        "HOST": os.environ["PAGE_DB_HOST"],
        "PORT": os.environ["PAGE_DB_PORT"],
        "CONN_MAX_AGE": 600,
    }
}
TEMPLATES = [{"BACKEND": "django.template.backends.django.DjangoTemplates", "DIRS": [os.path.join(os.path.dirname(__file__), "templates")]}]
USE_TZ = True
