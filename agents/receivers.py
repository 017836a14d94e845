"""Receivers of what the sink apps announce, connected in ``AgentsConfig.ready``.

Metering imports no app above it, so a quota warning it finds outside an order's transaction
(a direct ``quota_check``, the delivery of API calls) is published from here.
"""

from django.db import transaction
from django.dispatch import receiver

from metering.signals import quota_warning
from realtime.services import publish_agent_event


@receiver(quota_warning, dispatch_uid="agents.publish_quota_warning")
def publish_quota_warning(sender, *, agent_id, data: dict, **kwargs) -> None:
    """Publish ``quota.warning`` on the agent's ``portfolio`` channel, in a transaction of its
    own (a savepoint when the sender is in one): the agent's row is locked to number it."""
    with transaction.atomic():
        publish_agent_event(
            agent_id=agent_id, event="quota.warning", channel="portfolio", data=data
        )
