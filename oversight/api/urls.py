from django.urls import path

from oversight.api.views import ApprovalRequestViewSet

urlpatterns = [
    path(
        "oversight/requests",
        ApprovalRequestViewSet.as_view({"get": "list"}),
        name="approval-request-list",
    ),
    path(
        "oversight/requests/<uuid:pk>",
        ApprovalRequestViewSet.as_view({"get": "retrieve"}),
        name="approval-request-detail",
    ),
    path(
        "oversight/requests/<uuid:pk>/approve",
        ApprovalRequestViewSet.as_view({"post": "approve"}),
        name="approval-request-approve",
    ),
    path(
        "oversight/requests/<uuid:pk>/reject",
        ApprovalRequestViewSet.as_view({"post": "reject"}),
        name="approval-request-reject",
    ),
]
