import django_filters

from oversight.choices import Priority, RequestStatus
from oversight.models import ApprovalRequest


class ApprovalRequestFilter(django_filters.FilterSet):
    """``?status=&agent_id=&priority=`` on the approval request list."""

    status = django_filters.ChoiceFilter(choices=RequestStatus.choices)
    agent_id = django_filters.UUIDFilter(field_name="agent_id")
    priority = django_filters.ChoiceFilter(choices=Priority.choices)

    class Meta:
        model = ApprovalRequest
        fields = ["status", "agent_id", "priority"]
