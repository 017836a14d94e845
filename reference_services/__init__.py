"""Reference implementations of the Creto metering and oversight gRPC services.

Plain Python and grpcio, no Django: they stand in for the external Creto services so that the
project runs and is tested end to end over real gRPC. All state lives in memory and is lost when
the process stops. Start both with `reference_services.server.start_reference_services()` or
`python -m reference_services`.
"""
