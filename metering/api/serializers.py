"""JSON of the metering routes (SPEC §5)."""

from __future__ import annotations

from rest_framework import serializers

from api.bounds import MAX_USAGE_QUANTITY
from api.serializers import StrictInputSerializer
from grpc_clients.metering import USAGE_EVENT_TYPES
from metering.periods import DAILY, REPORT_PERIODS


class UsageQuerySerializer(serializers.Serializer):
    period = serializers.ChoiceField(choices=REPORT_PERIODS, default=DAILY)


class UsageBreakdownSerializer(serializers.Serializer):
    by_metric_code = serializers.DictField(
        child=serializers.IntegerField(),
        help_text="Sum of the quantities per metric code: what the totals and quotas count.",
    )
    by_event_type = serializers.DictField(
        child=serializers.IntegerField(),
        help_text="Number of usage events per Creto event type. An order is one api_call "
        "event of code trade_executions, so api_call here exceeds api_calls above.",
    )
    by_symbol = serializers.DictField(
        child=serializers.DictField(child=serializers.IntegerField()),
        help_text="Per symbol: trades (orders accepted) and trade_volume (whole dollars filled).",
    )


class UsageSerializer(serializers.Serializer):
    agent_id = serializers.UUIDField()
    period = serializers.CharField()
    period_start = serializers.DateTimeField()
    period_end = serializers.DateTimeField()
    api_calls = serializers.IntegerField(
        help_text="Authenticated API requests made for the agent (metric api_calls)."
    )
    trades = serializers.IntegerField(
        help_text="Orders accepted, filled or not (metric trade_executions)."
    )
    trade_volume = serializers.IntegerField(
        help_text="Notional filled, in whole dollars (metric trade_volume)."
    )
    oversight_requests = serializers.IntegerField(
        help_text="Orders sent for human approval (metric oversight_requests)."
    )
    breakdown = UsageBreakdownSerializer()


class QuotaSerializer(serializers.Serializer):
    metric_code = serializers.CharField()
    limit = serializers.IntegerField()
    used = serializers.IntegerField()
    remaining = serializers.IntegerField()
    usage_percentage = serializers.FloatField()
    period = serializers.CharField()
    period_start = serializers.DateTimeField(allow_null=True)
    period_end = serializers.DateTimeField(allow_null=True)


class DailyTradesSerializer(serializers.Serializer):
    """The server's own daily trade control (``daily_trade_limit``), counted from its database
    as the order path counts it: orders accepted today (UTC), the limit, and the reset."""

    orders_today = serializers.IntegerField()
    daily_trade_limit = serializers.IntegerField()
    remaining = serializers.IntegerField()
    window_start = serializers.DateTimeField()
    resets_at = serializers.DateTimeField()


class QuotaListSerializer(serializers.Serializer):
    agent_id = serializers.UUIDField()
    quotas = QuotaSerializer(many=True)
    daily_trades = DailyTradesSerializer()


class UsageEventInputSerializer(StrictInputSerializer):
    """``{agent_id, event_type, code, quantity, transaction_id?, properties?, timestamp?}``."""

    agent_id = serializers.UUIDField()
    event_type = serializers.ChoiceField(choices=USAGE_EVENT_TYPES)
    code = serializers.RegexField(
        r"^[a-z][a-z0-9_.-]*$",
        max_length=64,
        error_messages={"invalid": "Use lower-case letters, digits, '_', '.' or '-'."},
    )
    # Bounded so that no sum of an agent's usage can overflow (api.bounds).
    quantity = serializers.IntegerField(min_value=0, max_value=MAX_USAGE_QUANTITY)
    transaction_id = serializers.CharField(required=False, max_length=64, allow_blank=False)
    properties = serializers.DictField(
        child=serializers.CharField(max_length=500, allow_blank=True), required=False
    )
    timestamp = serializers.DateTimeField(required=False)


class UsageEventAcceptedSerializer(serializers.Serializer):
    transaction_id = serializers.CharField()
    status = serializers.ChoiceField(choices=["accepted", "duplicate"])
