from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.permissions import AllowAny
from rest_framework.throttling import ScopedRateThrottle
from rest_framework.views import APIView

from accounts import selectors, services
from accounts.serializers import (
    ApiKeyInputSerializer,
    ApiKeySerializer,
    LoginSerializer,
    NewApiKeySerializer,
    RefreshSerializer,
    RegisterSerializer,
    RevokedApiKeySerializer,
    TokenPairSerializer,
    UserSerializer,
)
from config.api import (
    EnvelopePagination,
    error_responses,
    message_only_schema,
    success,
    success_schema,
)


class PublicView(APIView):
    authentication_classes: list = []
    permission_classes = [AllowAny]
    throttle_classes = [ScopedRateThrottle]

    def get_authenticate_header(self, request):
        # Without authenticators DRF turns 401 into 403; bad credentials are a 401.
        return 'Bearer realm="api"'


class RegisterView(PublicView):
    throttle_scope = "register"

    @extend_schema(
        operation_id="auth_register",
        request=RegisterSerializer,
        responses={201: success_schema(UserSerializer), **error_responses(400, 429)},
    )
    def post(self, request):
        payload = RegisterSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        user = services.register_user(**payload.validated_data)
        return success(
            UserSerializer(user).data, message="Registered", status=status.HTTP_201_CREATED
        )


class TokenView(PublicView):
    throttle_scope = "login"

    @extend_schema(
        operation_id="auth_token",
        request=LoginSerializer,
        responses={200: success_schema(TokenPairSerializer), **error_responses(400, 401, 429)},
    )
    def post(self, request):
        return success(services.obtain_token_pair(request=request))


class TokenRefreshView(PublicView):
    throttle_scope = "login"

    @extend_schema(
        operation_id="auth_token_refresh",
        request=RefreshSerializer,
        responses={200: success_schema(TokenPairSerializer), **error_responses(400, 401, 429)},
    )
    def post(self, request):
        # Rotation is on: the reply carries a new refresh token; the old one is blacklisted.
        payload = RefreshSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        return success(services.rotate_refresh_token(refresh=payload.validated_data["refresh"]))


class LogoutView(APIView):
    @extend_schema(
        operation_id="auth_logout",
        request=RefreshSerializer,
        responses={200: message_only_schema(), **error_responses(400, 401)},
    )
    def post(self, request):
        payload = RefreshSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        services.logout(user=request.user, refresh=payload.validated_data["refresh"])
        return success(None, message="Logged out")


class MeView(APIView):
    @extend_schema(
        operation_id="user_me",
        responses={200: success_schema(UserSerializer), **error_responses(401)},
    )
    def get(self, request):
        return success(UserSerializer(request.user).data)


class ApiKeyListView(APIView):
    @extend_schema(
        operation_id="api_keys_list",
        responses={200: success_schema(ApiKeySerializer, paginated=True), **error_responses(401)},
    )
    def get(self, request):
        paginator = EnvelopePagination()
        page = paginator.paginate_queryset(selectors.api_keys_for(user=request.user), request, self)
        return paginator.get_paginated_response(ApiKeySerializer(page, many=True).data)

    @extend_schema(
        operation_id="api_keys_create",
        request=ApiKeyInputSerializer,
        responses={201: success_schema(NewApiKeySerializer), **error_responses(400, 401, 409)},
    )
    def post(self, request):
        payload = ApiKeyInputSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        created = services.create_api_key(user=request.user, **payload.validated_data)
        data = {**ApiKeySerializer(created.key).data, "key": created.secret}
        return success(
            data,
            message="Store this key now: it is shown only once.",
            status=status.HTTP_201_CREATED,
        )


class ApiKeyDetailView(APIView):
    @extend_schema(
        operation_id="api_keys_revoke",
        parameters=[OpenApiParameter("key_id", OpenApiTypes.INT, OpenApiParameter.PATH)],
        responses={200: success_schema(RevokedApiKeySerializer), **error_responses(401, 404)},
    )
    def delete(self, request, key_id: str):
        key = selectors.access_api_key(user=request.user, key_id=key_id)
        key = services.revoke_api_key(key=key)
        return success(RevokedApiKeySerializer(key).data, message="API key revoked")
