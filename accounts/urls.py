from django.urls import path

from accounts import views

urlpatterns = [
    path("auth/register", views.RegisterView.as_view(), name="auth-register"),
    path("auth/token", views.TokenView.as_view(), name="auth-token"),
    path("auth/token/refresh", views.TokenRefreshView.as_view(), name="auth-token-refresh"),
    path("auth/logout", views.LogoutView.as_view(), name="auth-logout"),
    path("user/me", views.MeView.as_view(), name="user-me"),
    path("keys", views.ApiKeyListView.as_view(), name="api-keys"),
    path("keys/<str:key_id>", views.ApiKeyDetailView.as_view(), name="api-key-detail"),
]
