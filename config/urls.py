from django.conf import settings
from django.contrib import admin
from django.urls import include, path, re_path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from api import views as api_views
from dashboard.views import favicon
from observability import views as service_views

api_v1 = [
    path("", api_views.ApiV1RootView.as_view(), name="api-v1-root"),
    path("auth/token", api_views.ObtainTokenView.as_view(), name="auth-token"),
    path("", include("agents.api.urls")),
    path("", include("trades.api.urls")),
    path("", include("oversight.api.urls")),
    path("", include("metering.api.urls")),
]

urlpatterns = [
    path("health/live", service_views.health_live, name="health-live"),
    path("health/ready", service_views.health_ready, name="health-ready"),
    path("metrics", service_views.metrics, name="metrics"),
    path("favicon.ico", favicon, name="favicon"),
    path("api", api_views.ApiRootView.as_view(), name="api-root"),
    path("api/v1/", include(api_v1)),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    path("problems/", include("api.problem_urls")),
    path("admin/", admin.site.urls),
    path("dashboard/", include("dashboard.urls")),
    # Anything else under /api answers a 404 problem document instead of an HTML page.
    re_path(r"^api(?:/.*)?$", api_views.ApiNotFoundView.as_view()),
]

if settings.DEBUG:
    urlpatterns.append(path("", RedirectView.as_view(url="/api")))
