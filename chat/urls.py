from django.urls import path

from billing.views import TokenStatsView
from chat import views

urlpatterns = [
    path("chat", views.ChatListView.as_view(), name="chat-list"),
    # Before chat/<chat_id>, which would take "token-stats" for a chat's id. The view is
    # billing's (the token count cache's statistics); the path is chat's.
    path("chat/token-stats", TokenStatsView.as_view(), name="chat-token-stats"),
    path("chat/<str:chat_id>", views.ChatDetailView.as_view(), name="chat-detail"),
    path("chat/<str:chat_id>/message", views.MessageView.as_view(), name="chat-message"),
    path(
        "chat/<str:chat_id>/messages/<str:message_id>/stream",
        views.ReplyStreamView.as_view(),
        name="chat-reply-stream",
    ),
    path(
        "chat/<str:chat_id>/messages/<str:message_id>/stop",
        views.ReplyStopView.as_view(),
        name="chat-reply-stop",
    ),
]
