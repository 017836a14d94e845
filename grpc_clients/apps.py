from django.apps import AppConfig


class GrpcClientsConfig(AppConfig):
    """Wrappers around the metering and oversight gRPC stubs; no models."""

    name = "grpc_clients"
    verbose_name = "gRPC clients"
