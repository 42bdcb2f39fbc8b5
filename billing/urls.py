from django.urls import path

from billing import views

urlpatterns = [
    path("user/token-usage", views.TokenUsageView.as_view(), name="user-token-usage"),
    path(
        "user/token-usage/export",
        views.TokenUsageExportView.as_view(),
        name="user-token-usage-export",
    ),
]
