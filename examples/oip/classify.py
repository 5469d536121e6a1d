"""Classify texts with tritonclient, as with any Triton or KServe model: only the model name (and
the address) are this server's. Run it in a virtual environment with requirements.txt installed:

    python examples/oip/classify.py --url 127.0.0.1:50051 "a gorgeous, witty and moving film" "a tedious mess"
"""

import argparse

import numpy as np
import tritonclient.grpc as grpcclient

parser = argparse.ArgumentParser(description="Classify texts through the Open Inference Protocol (tritonclient).")
parser.add_argument("--url", default="127.0.0.1:50051", help="the server's gRPC address")
parser.add_argument("--model", default="sst2-gru")
parser.add_argument("texts", nargs="*", default=["a gorgeous, witty and moving film", "a tedious, joyless mess"])
args = parser.parse_args()

client = grpcclient.InferenceServerClient(url=args.url)
print("server live:", client.is_server_live(), "ready:", client.is_server_ready(),
      f"{args.model} ready:", client.is_model_ready(args.model))

metadata = client.get_model_metadata(args.model)
print("model", metadata.name, "versions", list(metadata.versions), "platform", metadata.platform)

texts = np.array([t.encode("utf-8") for t in args.texts], dtype=np.object_)
text = grpcclient.InferInput("text", list(texts.shape), "BYTES")
text.set_data_from_numpy(texts)
outputs = [grpcclient.InferRequestedOutput("label"), grpcclient.InferRequestedOutput("probabilities")]

result = client.infer(args.model, inputs=[text], outputs=outputs)
labels = result.as_numpy("label")  # shape [N], bytes
probabilities = result.as_numpy("probabilities")  # shape [N, 2]: negative, positive
for sentence, label, p in zip(args.texts, labels, probabilities):
    print(f"{label.decode():8s} negative={p[0]:.3f} positive={p[1]:.3f}  {sentence}")
client.close()
