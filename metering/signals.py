"""What metering announces to the apps above it (metering imports none of them).

``quota_warning``: an agent's usage of a metric crossed ``QUOTA_WARNING_PERCENT`` of its quota,
found outside the transaction of an order (which publishes through its own ``AgentEvents``).
Sent with ``agent_id`` and ``data`` (``metric_code``, ``used``, ``limit``,
``usage_percentage``). Also sent, with ``refused`` true and ``period``, ``refused_at`` and
``resets_at``, the first time in a period that the metering service refuses the agent
(``quota_refusal_note``). ``agents.receivers`` publishes it as ``quota.warning`` on the agent's
``portfolio`` channel, and an exception of a receiver reaches the sender.
"""

from django.dispatch import Signal

quota_warning = Signal()
