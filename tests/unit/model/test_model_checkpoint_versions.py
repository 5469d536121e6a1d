"""A checkpoint is read as one version, even while a `current -> vN` symlink is flipped under it."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import torch

from rnn_sentiment.model.checkpoint import checkpoint_sha256, load_checkpoint, save_checkpoint

LOADS = 240


def _flip_forever(link: Path, targets: tuple[Path, Path], stop: threading.Event) -> None:
    """Repoint link between the two targets atomically (a new link renamed over it), as deploys do."""
    spare = link.with_name(link.name + ".next")
    flips = 0
    while not stop.is_set():
        flips += 1
        spare.unlink(missing_ok=True)
        spare.symlink_to(targets[flips % 2], target_is_directory=True)
        os.replace(spare, link)


def test_every_load_pairs_a_version_with_its_own_weights_while_the_link_flips(tmp_path, vocab, tiny_network):
    versions = {}
    for seed, version in enumerate(("1.0.0", "2.0.0")):
        network = tiny_network(len(vocab), seed=seed)
        directory = tmp_path / f"v{seed + 1}"
        save_checkpoint(directory, network, vocab, network.config, "tiny", version)
        versions[version] = (directory, checkpoint_sha256(directory), network.classifier.bias.detach().clone())
    (first, _, _), (second, _, _) = versions.values()
    link = tmp_path / "current"
    link.symlink_to(first, target_is_directory=True)

    stop = threading.Event()
    flipper = threading.Thread(target=_flip_forever, args=(link, (first, second), stop), daemon=True)
    flipper.start()
    try:
        loaded = [load_checkpoint(link) for _ in range(LOADS)]
    finally:
        stop.set()
        flipper.join(timeout=10)

    for model in loaded:
        directory, sha256, bias = versions[model.version]
        assert model.path == link  # the name the caller gave, which the server names the model after
        assert model.resolved_path == directory
        assert model.sha256 == sha256
        torch.testing.assert_close(model.network.classifier.bias, bias, rtol=0, atol=0)
    assert {model.version for model in loaded} == set(versions)  # the link really did flip during loads
