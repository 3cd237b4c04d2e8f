from django.contrib import admin

from .models import ApiToken, Message, Room


@admin.register(Room)
class RoomAdmin(admin.ModelAdmin):
    list_display = ("name", "last_id")
    search_fields = ("name",)


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    list_display = ("room", "seq", "username", "created_at")
    list_filter = ("room",)
    search_fields = ("username", "body")
    raw_id_fields = ("room", "user")


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ("prefix", "user", "name", "created_at", "expires_at", "revoked_at", "last_used_at")
    search_fields = ("prefix", "user__username", "name")
    # The hash is useless to an admin and editing it would silently break the token.
    readonly_fields = ("prefix", "key_hash", "created_at", "last_used_at")
    raw_id_fields = ("user",)
