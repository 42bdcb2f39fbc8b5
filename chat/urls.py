from django.urls import path

from chat import views

urlpatterns = [
    path("chat", views.ChatListView.as_view(), name="chat-list"),
    path("chat/<str:chat_id>", views.ChatDetailView.as_view(), name="chat-detail"),
    path("chat/<str:chat_id>/message", views.MessageView.as_view(), name="chat-message"),
]
