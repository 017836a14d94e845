"""Keeps the token cache (``api.authentication``) true to the database: connected in
``ApiConfig.ready``.

Each receiver runs before the change is written (``pre_save``, ``pre_delete``), so a cache
that cannot be told refuses the change instead of outliving it. Deleting a user deletes its
tokens, whose ``pre_delete`` is sent for each.
"""

from django.contrib.auth import get_user_model
from django.db.models.signals import pre_delete, pre_save
from django.dispatch import receiver
from rest_framework.authtoken.models import Token

from api.authentication import token_cache_revoke

# A login writes only this column: it does not change who a token authenticates.
LOGIN_FIELDS = frozenset({"last_login"})


@receiver(pre_delete, sender=Token, dispatch_uid="api.token_deleted")
def token_deleted(sender, instance, **kwargs) -> None:
    token_cache_revoke([instance.key])


@receiver(pre_save, sender=Token, dispatch_uid="api.token_saved")
def token_saved(sender, instance, raw=False, **kwargs) -> None:
    # A new token has nothing cached (no row: nothing to mark); an existing one may be given
    # to another user. The key is read only when the cache is on.
    if not raw:
        token_cache_revoke(Token.objects.filter(pk=instance.pk).values_list("key", flat=True))


@receiver(pre_save, sender=get_user_model(), dispatch_uid="api.user_saved")
def user_saved(sender, instance, update_fields=None, raw=False, **kwargs) -> None:
    if raw or instance.pk is None:
        return
    if update_fields is not None and frozenset(update_fields) <= LOGIN_FIELDS:
        return
    token_cache_revoke(Token.objects.filter(user_id=instance.pk).values_list("key", flat=True))
