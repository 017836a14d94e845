"""``/problems/<slug>/``: the page each problem document's ``type`` links to (public)."""

from django.urls import path
from drf_problems.views import ErrorDocumentationView
from rest_framework.permissions import AllowAny

app_name = "drf_problems"


class PublicErrorDocumentationView(ErrorDocumentationView):
    permission_classes = [AllowAny]
    authentication_classes = []
    # A documentation page, not an API operation: left out of the OpenAPI schema.
    schema = None


urlpatterns = [
    path("<slug:code>/", PublicErrorDocumentationView.as_view(), name="error-documentation"),
]
