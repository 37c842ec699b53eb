"""Root URLs: the API under /api/, its schema and docs, the Django admin, sign-in, the dashboards' data
and actions under /dashboards/, the project builder under /builder/, and the browser pages."""

from django.conf import settings
from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import include, path, re_path
from django.views import defaults
from django.views.static import serve
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from chorus.health import healthz
from classifications import sign_in

urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    path("api/", include("classifications.urls")),
    path("django-admin/", admin.site.urls),
    path("accounts/login/", sign_in.LoginView.as_view(), name="login"),  # failed sign-ins throttled
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("dashboards/", include("dashboards.urls")),
    path("builder/", include("builder.urls")),
    path("", include("similarity.urls")),  # its API under api/workflows/<id>/similarity/ and its page
    path("", include("web.urls")),
]


def serve_media(request: HttpRequest, path: str) -> HttpResponse:
    """Subject images (MEDIA_ROOT read per request); production may serve them from a front server."""
    return serve(request, path, document_root=settings.MEDIA_ROOT)


if settings.SERVE_MEDIA:
    urlpatterns.append(re_path(rf"^{settings.MEDIA_URL.lstrip('/')}(?P<path>.*)$", serve_media))


def server_error(request: HttpRequest) -> HttpResponse:
    """An unexpected error: JSON for the API, Django's plain page otherwise; never a traceback (the
    traceback page needs DEBUG, off unless CHORUS_DEBUG=1; the error itself is logged)."""
    if request.path_info.startswith("/api/"):
        return JsonResponse({"detail": "server error"}, status=500)
    return defaults.server_error(request)


def page_not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    """No such URL: JSON under /api/ (as every API error is, and as the schema says), Django's page
    otherwise. A path that matches no route (``/api/workflows/abc/``) never reaches DRF's handler."""
    if request.path_info.startswith("/api/"):
        return JsonResponse({"detail": "Not found."}, status=404)
    return defaults.page_not_found(request, exception)


handler404 = page_not_found
handler500 = server_error
