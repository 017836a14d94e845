import django_filters

from trades.choices import OrderType, Side, TradeStatus
from trades.models import Trade


class TradeFilter(django_filters.FilterSet):
    """``?status=&symbol=&side=&type=`` on an agent's orders."""

    status = django_filters.ChoiceFilter(choices=TradeStatus.choices)
    symbol = django_filters.CharFilter(method="filter_symbol")
    side = django_filters.ChoiceFilter(choices=Side.choices)
    type = django_filters.ChoiceFilter(choices=OrderType.choices)

    class Meta:
        model = Trade
        fields = ["status", "symbol", "side", "type"]

    def filter_symbol(self, queryset, name, value):
        return queryset.filter(symbol=value.strip().upper())
