from django.urls import path

from chat import views

urlpatterns = [
    path("chat/<str:chat_id>/message", views.MessageView.as_view(), name="chat-message"),
]
