from django.apps import AppConfig


class AccountsConfig(AppConfig):
    """Sign-in protection: what a locked-out login sees, and the lockout screens of the admin."""

    name = "accounts"
    verbose_name = "Accounts"
