"""Generated stubs of the Open Inference Protocol v2 (package `inference`), from grpc_service.proto by `make proto`."""
