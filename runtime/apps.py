from django.apps import AppConfig


class RuntimeConfig(AppConfig):
    """The serving processes: the commands that start them, their background jobs, the leader
    election of the singleton jobs and the embedded reference gRPC services."""

    name = "runtime"
    verbose_name = "Runtime"
