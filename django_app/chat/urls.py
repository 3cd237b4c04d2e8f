from django.urls import path

from . import api, views

app_name = "chat"

urlpatterns = [
    path("", views.index, name="index"),
    path("chat/<str:room>/", views.room, name="room"),
    path("api/tokens/", api.token_list, name="token-list"),
    path("api/tokens/<str:prefix>/", api.token_detail, name="token-detail"),
]
