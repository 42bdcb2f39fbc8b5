from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from config.health import health

# The apps' URLs are included by module name: config imports no app.
urlpatterns = [
    path("", include("chat.page_urls")),
    path("admin/", admin.site.urls),
    path("health", health, name="health"),
    path("api/schema", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("api/", include("billing.urls")),
    path("api/", include("accounts.urls")),
    path("api/", include("chat.urls")),
    # The OpenAI-compatible API (API keys, OpenAI's shapes): docs/api.md.
    path("v1/", include("chat.openai_api.urls")),
]

handler400 = "config.api.handler400"
handler403 = "config.api.handler403"
handler404 = "config.api.handler404"
handler500 = "config.api.handler500"
