from django.urls import path

from chat import views

urlpatterns = [
    path("chat", views.ChatListView.as_view(), name="chat-list"),
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
