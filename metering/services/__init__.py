"""Metering writes: usage recording (the outbox), quotas, and the outbox's delivery.

Every usage event is first a ``UsageEvent`` row written in the transaction of the business
change it meters (``recording``), so usage exists exactly when the change does;
``usage_deliver_pending`` then sends the rows with ``IngestEventBatch`` (``delivery``); quota
checks count what is still in the outbox as used (``quotas``). Callers import from here.
"""

from metering.services.delivery import (
    API_CALLS_STATUS_MAX_AGE_SECONDS,
    DELIVERY_BATCH_SIZE,
    MAX_BACKOFF_SECONDS,
    DeliveryReport,
    backoff_seconds,
    usage_deliver_pending,
)
from metering.services.quotas import (
    MAX_WIRE_QUANTITY,
    QUOTA_PERIODS,
    QUOTA_WARNING_PERCENT,
    SUM_SPLIT,
    Literal,
    pending_usage,
    pending_usage_annotated,
    pending_usage_annotations,
    quota_check,
    quota_configure,
    quota_configure_all,
    quota_refusal_key,
    quota_refusal_note,
    quota_warn,
    quota_warning_crossed,
    quota_warning_data,
    quota_warning_send,
    quota_window,
    usage_sum_total,
    usage_sums,
)
from metering.services.recording import (
    RESERVED_PROPERTIES,
    SubmittedUsage,
    api_call_record,
    api_call_usage,
    client_transaction_id,
    server_transaction_id,
    usage_build,
    usage_bulk_record,
    usage_event_submit,
    usage_record,
)

__all__ = [
    "API_CALLS_STATUS_MAX_AGE_SECONDS",
    "DELIVERY_BATCH_SIZE",
    "MAX_BACKOFF_SECONDS",
    "MAX_WIRE_QUANTITY",
    "QUOTA_PERIODS",
    "QUOTA_WARNING_PERCENT",
    "RESERVED_PROPERTIES",
    "SUM_SPLIT",
    "DeliveryReport",
    "Literal",
    "SubmittedUsage",
    "api_call_record",
    "api_call_usage",
    "backoff_seconds",
    "client_transaction_id",
    "pending_usage",
    "pending_usage_annotated",
    "pending_usage_annotations",
    "quota_check",
    "quota_configure",
    "quota_configure_all",
    "quota_refusal_key",
    "quota_refusal_note",
    "quota_warn",
    "quota_warning_crossed",
    "quota_warning_data",
    "quota_warning_send",
    "quota_window",
    "server_transaction_id",
    "usage_build",
    "usage_bulk_record",
    "usage_deliver_pending",
    "usage_event_submit",
    "usage_record",
    "usage_sum_total",
    "usage_sums",
]
