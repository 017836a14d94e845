import django_filters

from agents.choices import AgentStatus, Strategy
from agents.models import Agent


class AgentFilter(django_filters.FilterSet):
    status = django_filters.ChoiceFilter(choices=AgentStatus.choices)
    strategy = django_filters.ChoiceFilter(choices=Strategy.choices)

    class Meta:
        model = Agent
        fields = ["status", "strategy"]
